// What the SSE and WebSocket subscriber scripts share: the ramp-and-hold scenario, the fan-out
// metrics, and how an update is recorded.
//
// Each virtual user holds one stream for HOLD; VUS of them are ramped up over RAMP.
import { Counter, Trend } from "k6/metrics";

export const VUS = Number(__ENV.VUS || 1000);
export const HOLD_MS = Number((__ENV.HOLD || "60s").replace(/s$/, "")) * 1000;

const fanout = new Trend("apura_fanout_latency", true);
const updates = new Counter("apura_updates");
export const snapshots = new Counter("apura_snapshots");

// The scenario and thresholds of a subscriber script whose stream errors count in `errors`
// (a counter the script names): p99 fan-out under a second, no error.
export function subscriberOptions(errors) {
  return {
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
      [errors]: ["count==0"],
    },
  };
}

// An update received at `now` whose document says it was published at `published` (ms, or
// null when it does not say): its fan-out latency is recorded.
export function recordUpdate(now, published) {
  if (published !== null) {
    fanout.add(now - published);
    updates.add(1);
  }
}
