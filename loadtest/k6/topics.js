// Topic list and skewed draws shared by the k6 scripts.
//
// Demand on count night is skewed: São Paulo alone is ~25 % of views and the long tail of small
// towns is cold. A virtual user draws the hot topic with probability HOT_SHARE, else a topic of
// rank r (capitals first) with weight 1/r^ZIPF_S — the same model as the native apura-load.
import http from "k6/http";

export const BASE = __ENV.BASE_URL || "http://127.0.0.1:8080";
export const HOT_TOPIC = __ENV.HOT_TOPIC || "mayors-sp-sao-paulo";
export const HOT_SHARE = Number(__ENV.HOT_SHARE || 0.25);
export const ZIPF_S = Number(__ENV.ZIPF_S || 1.0);
export const PREFIX = __ENV.TOPIC_PREFIX || "mayors-";

// Run once in setup(): the mayor topics from the gateway's index, capitals first.
export function loadTopics() {
  const res = http.get(`${BASE}/cities.json`, { tags: { name: "index" } });
  if (res.status !== 200) {
    throw new Error(`GET /cities.json: status ${res.status}`);
  }
  const cities = res.json("cities");
  const capitals = [];
  const rest = [];
  for (const c of cities) {
    for (const t of c.topics) {
      if (t.startsWith(PREFIX)) (c.capital ? capitals : rest).push(t);
    }
  }
  const ranked = capitals.concat(rest).filter((t) => t !== HOT_TOPIC);
  const cdf = [];
  let acc = 0;
  for (let r = 1; r <= ranked.length; r++) {
    acc += 1 / Math.pow(r, ZIPF_S);
    cdf.push(acc);
  }
  return { ranked, cdf };
}

// One draw from the skewed distribution.
export function drawTopic(topics) {
  if (topics.ranked.length === 0 || Math.random() < HOT_SHARE) return HOT_TOPIC;
  const x = Math.random() * topics.cdf[topics.cdf.length - 1];
  let lo = 0;
  let hi = topics.cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (topics.cdf[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return topics.ranked[lo];
}

// The `published_at` of a document (Unix ms), or null. Scans the text instead of parsing it.
export function publishedAt(text) {
  const key = '"published_at":';
  const i = text.indexOf(key);
  if (i < 0) return null;
  const m = /^\s*(\d+)/.exec(text.slice(i + key.length, i + key.length + 24));
  return m ? Number(m[1]) : null;
}
