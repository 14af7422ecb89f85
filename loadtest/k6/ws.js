// WebSocket subscribers: each virtual user opens /ws, subscribes to one drawn topic, and records
// the delay from every update's `published_at` to its receipt.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e VUS=1000 -e HOLD=60s loadtest/k6/ws.js
import ws from "k6/ws";
import { check } from "k6";
import { Counter, Trend } from "k6/metrics";
import { BASE, drawTopic, loadTopics, publishedAt } from "./topics.js";

const VUS = Number(__ENV.VUS || 1000);
const HOLD_MS = Number((__ENV.HOLD || "60s").replace(/s$/, "")) * 1000;

const fanout = new Trend("apura_fanout_latency", true);
const updates = new Counter("apura_updates");
const snapshots = new Counter("apura_snapshots");
const serverErrors = new Counter("apura_ws_errors");

export const options = {
  scenarios: {
    subscribers: {
      executor: "ramping-vus",
      startVUs: 0,
      stages: [
        { duration: __ENV.RAMP || "30s", target: VUS },
        { duration: __ENV.HOLD || "60s", target: VUS },
      ],
      gracefulRampDown: "5s",
    },
  },
  thresholds: {
    apura_fanout_latency: ["p(99)<1000"],
    apura_ws_errors: ["count==0"],
  },
};

export function setup() {
  return loadTopics();
}

export default function (topics) {
  const topic = drawTopic(topics);
  const url = BASE.replace(/^http/, "ws") + "/ws";
  const res = ws.connect(url, {}, (socket) => {
    socket.on("open", () => {
      socket.send(JSON.stringify({ type: "subscribe", topics: [topic], since: 0 }));
    });
    socket.on("message", (text) => {
      const now = Date.now();
      if (text.startsWith('{"type":"error"')) {
        serverErrors.add(1);
        return;
      }
      if (text.startsWith('{"type":"snapshot"')) {
        snapshots.add(1);
        return;
      }
      const p = publishedAt(text);
      if (p !== null) {
        fanout.add(now - p);
        updates.add(1);
      }
    });
    socket.setTimeout(() => socket.close(), HOLD_MS);
  });
  check(res, { "status 101": (r) => r && r.status === 101 });
}
