-- Argo CD health check for truffles.kz/TrufflesClient, from the operator's status.
-- argocd-cm: resource.customizations.health.truffles.kz_TrufflesClient: |
--   <this file>
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Truffles operator"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    hs.message = c.message
    if c.status == "True" then
      hs.status = "Healthy"
    elseif c.reason == "Suspended" or c.reason == "BillingSuspended" or c.reason == "Deleted" then
      hs.status = "Suspended"
    elseif c.reason == "InvalidSpec" or c.reason == "NameTaken" or c.reason == "SecretMissing" then
      hs.status = "Degraded"
    else
      hs.status = "Progressing"
    end
    return hs
  end
end
hs.status = "Progressing"
hs.message = "No Ready condition yet"
return hs
