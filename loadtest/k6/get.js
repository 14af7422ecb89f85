// JSON GET of city documents with ETag revalidation, as pages that cannot stream do: each
// iteration draws a topic and sends If-None-Match with the ETag last seen for it (304 expected
// until the topic changes).
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e RATE=2000 -e DURATION=60s loadtest/k6/get.js
import http from "k6/http";
import { check } from "k6";
import { Counter } from "k6/metrics";
import { BASE, drawTopic, loadTopics } from "./topics.js";

const notModified = new Counter("apura_not_modified");
// ETag last seen per topic, per virtual user.
const etags = {};

export const options = {
  scenarios: {
    pollers: {
      executor: "constant-arrival-rate",
      rate: Number(__ENV.RATE || 2000),
      timeUnit: "1s",
      duration: __ENV.DURATION || "60s",
      preAllocatedVUs: Number(__ENV.VUS || 200),
    },
  },
  thresholds: {
    http_req_failed: ["rate<0.001"],
    http_req_duration: ["p(99)<100"],
  },
};

export function setup() {
  return loadTopics();
}

export default function (topics) {
  const topic = drawTopic(topics);
  const headers = { "Accept-Encoding": "gzip" };
  if (etags[topic]) headers["If-None-Match"] = etags[topic];
  const res = http.get(`${BASE}/cities/${topic}.json`, {
    headers,
    tags: { name: "city" },
    responseCallback: http.expectedStatuses(200, 304),
  });
  if (res.status === 304) notModified.add(1);
  if (res.status === 200 && res.headers.Etag) etags[topic] = res.headers.Etag;
  check(res, {
    "200 or 304": (r) => r.status === 200 || r.status === 304,
    "has ETag": (r) => r.status === 304 || !!r.headers.Etag,
  });
}
