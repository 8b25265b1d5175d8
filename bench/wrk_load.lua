-- One script for every wrk run of the harness (bench/load.py writes the arguments).
-- args: method, run tag. Environment (kept out of argv, where `ps` shows tokens):
-- BENCH_WRK_BODY the body template ("" or unset = no body), BENCH_WRK_HEADERS header
-- lines "Name: value" separated by newlines.
-- Template placeholders, filled per request (bench/load.py fills them the same way):
--   {{run}} run tag, {{w}} thread id, {{n}} per-thread sequence number,
--   {{d8}} 8 digits unique per thread and sequence ((w mod 10) * 10^7 + n mod 10^7).
-- done() prints one "BENCH_JSON {...}" line and up to 5 "BENCH_SAMPLE <status> <body>"
-- lines per thread for non-2xx answers.

local threads = {}

function setup(thread)
  thread:set("wid", #threads)
  table.insert(threads, thread)
end

function init(args)
  method = args[1]
  run_tag = args[2]
  template = os.getenv("BENCH_WRK_BODY") or ""
  local hdrs = {}
  for line in string.gmatch(os.getenv("BENCH_WRK_HEADERS") or "", "[^\n]+") do
    local k, v = string.match(line, "^([^:]+):%s*(.*)$")
    if k then hdrs[k] = v end
  end
  req_headers = hdrs
  statuses = {}
  samples = ""
  nsamples = 0
  n = 0
  if template == "" then
    static_request = wrk.format(method, wrk.path, req_headers, nil)
  end
end

local function fill(key)
  if key == "run" then return run_tag end
  if key == "w" then return tostring(wid) end
  if key == "n" then return tostring(n) end
  -- Phase digit: the warm-up run (tag ending in "w") and the measured run must not share
  -- phone numbers, or measured captures would be merges of warm-up leads.
  if key == "p" then return (run_tag:sub(-1) == "w") and "9" or "8" end
  if key == "d8" then return string.format("%08d", (wid % 10) * 10000000 + n % 10000000) end
  return "{{" .. key .. "}}"
end

function request()
  if static_request then return static_request end
  n = n + 1
  local body = string.gsub(template, "{{(%w+)}}", fill)
  return wrk.format(method, wrk.path, req_headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if (status < 200 or status > 299) and nsamples < 5 then
    nsamples = nsamples + 1
    local text = string.gsub(string.sub(body or "", 1, 300), "[\r\n\t]", " ")
    samples = samples .. "BENCH_SAMPLE " .. status .. " " .. text .. "\n"
  end
end

function done(summary, latency, requests)
  local merged = {}
  local all_samples = ""
  for _, t in ipairs(threads) do
    local st = t:get("statuses")
    if st then
      for code, count in pairs(st) do merged[code] = (merged[code] or 0) + count end
    end
    all_samples = all_samples .. (t:get("samples") or "")
  end
  local parts = {}
  for code, count in pairs(merged) do
    table.insert(parts, string.format('"%d":%d', code, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},'
      .. '"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, table.concat(parts, ",")))
  io.write(all_samples)
end
