-- Argo CD health check for every kind of chromasync.dev: SyncSource, SyncRun,
-- ChromaSyncConnection, ClusterChromaSyncConnection (Argo CD runs gopher-lua, Lua 5.1); all
-- write the same conditions.
-- Same reading as kstatus (Flux, Helm 4): deleting or not yet observed -> Progressing;
-- Stalled=True -> Degraded (checked before Ready, so an old Ready cannot hide a failure);
-- Reconciling=True -> Progressing; Ready=True -> Healthy; anything else -> Progressing.
-- Paused (the chromasync.dev/paused annotation) -> Suspended, whatever the status says.
local hs = {}
local annotations = obj.metadata ~= nil and obj.metadata.annotations or nil
if annotations ~= nil and annotations["chromasync.dev/paused"] == "true" then
  hs.status = "Suspended"
  hs.message = "Paused (chromasync.dev/paused): no call to Chroma Sync and no change until the annotation is removed"
  return hs
end
if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Deleting: the operator is cleaning up in Chroma Sync"
  return hs
end
local status = obj.status
if status == nil or status.observedGeneration == nil
    or status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
local ready, stalled, reconciling
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Ready" then ready = c end
    if c.type == "Stalled" then stalled = c end
    if c.type == "Reconciling" then reconciling = c end
  end
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return hs
end
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = (reconciling.reason or "Reconciling") .. ": " .. (reconciling.message or "")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
hs.status = "Progressing"
hs.message = "Waiting for Ready"
return hs
