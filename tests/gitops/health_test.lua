-- Runs deploy/argocd/health.lua (as Argo CD does: a chunk with a global `obj`) on SyncSources
-- in the states the operator writes (tests/gitops.rs generates them from the operator's own
-- status code), and checks what Argo CD would show.
-- Usage: lua5.1 health_test.lua path/to/health.lua cases.lua
local script = assert(arg[1], "usage: lua5.1 health_test.lua health.lua cases.lua")
local chunk = assert(loadfile(script))

-- The cases: a Lua file returning a list of { name, object, wanted status }.
local cases = dofile(assert(arg[2], "usage: lua5.1 health_test.lua health.lua cases.lua"))

local failed = 0
for _, case in ipairs(cases) do
  local name, object, want = case[1], case[2], case[3]
  setfenv(chunk, { obj = object, ipairs = ipairs })
  local hs = chunk()
  local ok = hs.status == want
  if not ok then failed = failed + 1 end
  print(string.format("%-34s -> %-12s %s %s", name, hs.status, ok and "ok" or ("WANT " .. want), hs.message))
end
print(string.format("%d passed, %d failed", #cases - failed, failed))
os.exit(failed == 0 and 0 or 1)
