"""Model governance: the registry, fairness by subgroup, drift monitoring, the release gate and
the committee's reports. Plain Python over `ScoredSet`s; each governed model supplies an adapter
(`careloop.governance.adapters`) that turns its data into one."""
