"""Turns a comprehensive health report into diagnostics, a resolution plan and priority actions."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

_CAUSES = {
    "bridge": (["Bridge not initialized or closed", "Initialization failed"], "low"),
    "storage": (["Shard actor crashed or restarting", "Ray node unavailable", "Storage volume unavailable"], "medium"),
    "data_layer": (["High load on shard actors", "Slow storage volume"], "medium"),
    "configuration": (["Suboptimal configuration values"], "low"),
    "cache": (["Cache budget too small for the working set"], "low"),
}
_PRIORITY = {"critical": 0, "error": 1, "warning": 2, "info": 3}
_TIME = {"low": "5-15 minutes", "medium": "30-60 minutes", "high": "2-4 hours"}


def diagnose(report: dict[str, Any]) -> dict[str, Any]:
    diagnostics = []
    for issue in report.get("issues_detected", []):
        component = issue["component"]
        causes, effort = _CAUSES.get(component, (["Resource pressure on the host"], "medium"))
        diagnostics.append({"component": component, "severity": issue["severity"], "issue": issue["message"],
                            "possible_causes": causes, "recommended_actions": issue.get("recommendations", []),
                            "estimated_effort": effort, "estimated_time": _TIME[effort]})
    diagnostics.sort(key=lambda d: (_PRIORITY.get(d["severity"], 4), d["component"]))
    plan = [{"step": number, "component": d["component"], "action": (d["recommended_actions"] or
                                                                     [f"Investigate {d['issue']}"])[0],
             "estimated_time": d["estimated_time"]} for number, d in enumerate(diagnostics, start=1)]
    priority = [step["action"] for step, d in zip(plan, diagnostics) if d["severity"] in ("critical", "error")]
    return {"timestamp": datetime.now(timezone.utc).isoformat(), "issues_found": len(diagnostics),
            "diagnostics": diagnostics, "resolution_plan": plan, "priority_actions": priority}
