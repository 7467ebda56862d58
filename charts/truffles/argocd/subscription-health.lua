-- Argo CD health check for truffles.kz/Subscription, from the billing status.
-- argocd-cm: resource.customizations.health.truffles.kz_Subscription: |
--   <this file>
local hs = {}
if obj.status == nil or obj.status.state == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the billing evaluation"
  return hs
end
local state = obj.status.state
hs.message = "Billing state " .. state
if state == "Suspended" or state == "Cancelled" then
  hs.status = "Suspended"
elseif state == "PastDue" then
  hs.status = "Degraded"
else
  hs.status = "Healthy"
end
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" and c.status == "False" then
      hs.status = "Degraded"
      hs.message = c.message
    end
  end
end
return hs
