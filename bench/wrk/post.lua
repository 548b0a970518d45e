-- wrk script for W3 (ingest) in bench/run.py: POST the same request over keep-alive.
--   WRK_PATH   request path                      (/insert, /pub/ch0, /.well-known/mercure)
--   WRK_BODY   request body
--   WRK_CTYPE  Content-Type                      (default application/json)
--   WRK_AUTH   Authorization header value, optional ("Bearer <jwt>")
-- done() prints one line `WRKJSON {...}` with the totals and latency percentiles (ms).
wrk.method = "POST"
wrk.path = os.getenv("WRK_PATH") or "/"
wrk.body = os.getenv("WRK_BODY") or ""
wrk.headers["Content-Type"] = os.getenv("WRK_CTYPE") or "application/json"
local auth = os.getenv("WRK_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_s": %.3f, "rps": %.1f, "bytes": %d, ' ..
    '"err_connect": %d, "err_read": %d, "err_write": %d, "err_status": %d, "err_timeout": %d, ' ..
    '"lat_p50_ms": %.3f, "lat_p90_ms": %.3f, "lat_p99_ms": %.3f, "lat_max_ms": %.3f, "lat_mean_ms": %.3f}\n',
    summary.requests, secs, summary.requests / secs, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000))
end
