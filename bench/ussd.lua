-- wrk script: Africa's Talking USSD callbacks, one caller per wrk thread.
--
-- Run with as many threads as connections (wrk -t16 -c16 ...): a wrk thread's
-- Lua state is shared by its connections, so one connection per thread keeps
-- each caller's dialog strictly in order (dial, wait for CON, choose, ...).
--
-- Environment (set by bench/ussd_bench.py):
--   BENCH_DIALOGS  dialogs separated by ';', each "phone|step,step,..." where a
--                  step is AT's cumulative text (the first, the dial, is empty):
--                  "+254700000101|,1;+254700000105|,2,2*1"
--   BENCH_RUN      a tag that makes session ids unique across runs
--   BENCH_MODE     "ussd" (check CON before the last step, END on it) or "bare" (200 only)
--   BENCH_CODE     service code (default *384*12#)

local function split(s, sep)
  local out, start = {}, 1
  while true do
    local i = string.find(s, sep, start, true)
    if not i then
      table.insert(out, string.sub(s, start))
      return out
    end
    table.insert(out, string.sub(s, start, i - 1))
    start = i + 1
  end
end

local function urlencode(s)
  return (string.gsub(s, "[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

local dialogs, d, step, n, expect, run, mode, code, headers
bad_status = 0
bad_body = 0
dialogs_done = 0

function init(args)
  run = os.getenv("BENCH_RUN") or "r"
  mode = os.getenv("BENCH_MODE") or "ussd"
  code = urlencode(os.getenv("BENCH_CODE") or "*384*12#")
  dialogs = {}
  for _, spec in ipairs(split(os.getenv("BENCH_DIALOGS") or "+254700000101|,1", ";")) do
    local parts = split(spec, "|")
    table.insert(dialogs, { phone = urlencode(parts[1]), steps = split(parts[2], ",") })
  end
  d = ((tid or 1) - 1) % #dialogs + 1       -- threads start on different dialogs
  step, n = 1, 0
  headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
end

function request()
  local dl = dialogs[d]
  local body = "sessionId=ATUid_" .. run .. "_" .. (tid or 0) .. "_" .. n
    .. "&serviceCode=" .. code
    .. "&phoneNumber=" .. dl.phone
    .. "&networkCode=63902"
    .. "&text=" .. urlencode(dl.steps[step])
  expect = (step == #dl.steps) and "END" or "CON"
  step = step + 1
  if step > #dl.steps then                   -- dialog over: next caller, next session
    step, n = 1, n + 1
    d = d % #dialogs + 1
    dialogs_done = dialogs_done + 1
  end
  return wrk.format("POST", nil, headers, body)
end

function response(status, hdrs, body)
  if status ~= 200 then
    bad_status = bad_status + 1
  elseif mode == "ussd" and string.sub(body, 1, 3) ~= expect then
    bad_body = bad_body + 1
  end
end

function done(summary, latency, requests)
  local bs, bb, dd = 0, 0, 0
  for _, t in ipairs(threads) do
    bs = bs + (t:get("bad_status") or 0)
    bb = bb + (t:get("bad_body") or 0)
    dd = dd + (t:get("dialogs_done") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,'
    .. '"mean_us":%.1f,"connect_err":%d,"read_err":%d,"write_err":%d,"status_err":%d,"timeouts":%d,'
    .. '"bad_status":%d,"bad_body":%d,"dialogs":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout,
    bs, bb, dd))
end
