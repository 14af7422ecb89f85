// WebSocket subscribers: each virtual user opens /ws, subscribes to one drawn topic, and records
// the delay from every update's `published_at` to its receipt.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e VUS=1000 -e HOLD=60s loadtest/k6/ws.js
import ws from "k6/ws";
import { check } from "k6";
import { Counter } from "k6/metrics";
import { HOLD_MS, recordUpdate, snapshots, subscriberOptions } from "./subscribers.js";
import { BASE, drawTopic, loadTopics, publishedAt } from "./topics.js";

const serverErrors = new Counter("apura_ws_errors");

export const options = subscriberOptions("apura_ws_errors");

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
      recordUpdate(now, publishedAt(text));
    });
    socket.setTimeout(() => socket.close(), HOLD_MS);
  });
  check(res, { "status 101": (r) => r && r.status === 101 });
}
