-- Argo CD health check of m2m.dev/M2MClient (docs/gitops.md): Healthy when the manager's Ready
-- condition is True for the current generation, Degraded with Ready's reason and message when it
-- is False, Progressing until the manager has reconciled the current generation and while it is
-- Reconciling (waiting for the secret store to write the client's source).
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the m2m-operator manager to reconcile the client"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the manager to reconcile generation " .. tostring(generation)
  return hs
end
local ready = nil
local reconciling = nil
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  elseif condition.type == "Reconciling" and condition.status == "True" then
    reconciling = condition
  end
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
elseif reconciling ~= nil then
  -- Ready is False only while the secret store has not written the client's source yet
  -- (SourceSecretMissing): its next sync ends that, not a human.
  hs.status = "Progressing"
  ready = reconciling
elseif ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
  ready = reconciling
end
if ready == nil then
  hs.message = "Waiting for the manager to issue the client's credentials"
else
  hs.message = tostring(ready.reason) .. ": " .. tostring(ready.message)
end
return hs
