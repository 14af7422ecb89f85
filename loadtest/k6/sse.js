// SSE subscribers with the xk6-sse extension (build k6 with `xk6 build --with
// github.com/phymbert/xk6-sse`): each virtual user opens /events?topics=<drawn topic> and records
// the delay from every `update` event's `published_at` to its receipt.
//
//   ./k6 run -e BASE_URL=http://127.0.0.1:8080 -e VUS=1000 -e HOLD=60s loadtest/k6/sse.js
import sse from "k6/x/sse";
import { check } from "k6";
import { Counter } from "k6/metrics";
import { HOLD_MS, recordUpdate, snapshots, subscriberOptions } from "./subscribers.js";
import { BASE, drawTopic, loadTopics, publishedAt } from "./topics.js";

const sseErrors = new Counter("apura_sse_errors");

export const options = subscriberOptions("apura_sse_errors");

export function setup() {
  return loadTopics();
}

export default function (topics) {
  const topic = drawTopic(topics);
  const url = `${BASE}/events?topics=${encodeURIComponent(topic)}`;
  const started = Date.now();
  const res = sse.open(url, { method: "GET", headers: { Accept: "text/event-stream" } }, (client) => {
    client.on("event", (event) => {
      const now = Date.now();
      if (event.name === "snapshot") {
        snapshots.add(1);
      } else if (event.name === "update") {
        recordUpdate(now, publishedAt(event.data));
      }
      if (now - started > HOLD_MS) client.close();
    });
    client.on("error", () => sseErrors.add(1));
  });
  check(res, { "status 200": (r) => r && r.status === 200 });
}
