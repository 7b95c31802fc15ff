"""Issues, recommendations and diagnosis of a comprehensive health report, in upstream's shapes and
texts (contract §7): issue items, the overall status rule, and the diagnose_issues() plan."""

from __future__ import annotations

from typing import Any

from engine.models import iso, utc_now

_SEVERITY_OF = {"error": "error", "degraded": "warning"}

# Probable causes, diagnostic steps and effort per kind of issue. Every storage issue is a shard issue
# here (the storage component is the shard probes), so it adds the shard causes and takes medium effort.
_STORAGE = (["Disk space insufficient", "Permission issues", "Storage configuration errors", "File system issues",
             "Shard actor crashed or restarting", "Ray node unavailable", "Storage volume unavailable"],
            ["Check disk space availability", "Verify file system permissions", "Test storage operations manually",
             "Review storage configuration"], "medium")
_BRIDGE = (["Initialization failure", "Configuration issues", "Dependency problems"], [], "medium")
_PERFORMANCE = (["System resource constraints", "Suboptimal configuration", "Database/storage bottlenecks",
                 "Cache misses"],
                ["Monitor system resources during operation", "Profile operation performance",
                 "Review cache hit rates", "Check storage I/O patterns"], "medium")
_UNKNOWN: tuple[list[str], list[str], str] = ([], [], "unknown")

_EFFORT_ORDER = {"low": 1, "medium": 2, "high": 3}
_RESOLUTION_TIME = {
    ("low", "critical"): "15-30 minutes", ("low", "error"): "15-30 minutes", ("low", "warning"): "5-15 minutes",
    ("medium", "critical"): "1-2 hours", ("medium", "error"): "30-60 minutes", ("medium", "warning"): "15-30 minutes",
    ("high", "critical"): "2-4 hours", ("high", "error"): "1-2 hours", ("high", "warning"): "30-60 minutes",
}
_DEFAULT_RESOLUTION_TIME = "30-60 minutes"
_PERFORMANCE_DEGRADED_ADVICE = ["Review performance configuration settings",
                                "Consider enabling performance optimizations",
                                "Monitor system resources during peak usage"]


def detect_issues(components: dict[str, dict[str, Any]], system: dict[str, Any],
                  performance: dict[str, Any]) -> list[dict[str, Any]]:
    """One item per degraded or failing component, host resource and operation, in that order."""
    issues = [{"type": "component", "component": name, "severity": check["severity"], "message": check["message"],
               "recommendations": check["recommendations"]}
              for name, check in components.items() if check["status"] in _SEVERITY_OF]
    for resource, info in system.items():
        status = info.get("status")
        if status in _SEVERITY_OF:
            issues.append({"type": "system_resource", "resource": resource, "severity": _SEVERITY_OF[status],
                           "message": f"{resource.title()} usage is {status}",
                           "recommendations": [f"Monitor {resource} usage and consider optimization"]})
    for operation, stats in performance["operation_performance"].items():
        status = stats["status"]
        if status in _SEVERITY_OF:
            issues.append({"type": "performance", "operation": operation, "severity": _SEVERITY_OF[status],
                           "message": f"{operation} performance is {status} ({stats['recent_avg_ms']:.1f}ms)",
                           "recommendations": [f"Optimize {operation} performance",
                                               "Check system resources and configuration"]})
    return issues


def recommend(components: dict[str, dict[str, Any]], system: dict[str, Any], performance: dict[str, Any],
              issues: list[dict[str, Any]], config: Any) -> list[str]:
    """Every component's and issue's advice, then host and performance advice; de-duplicated, first seen first."""
    advice = [text for check in components.values() for text in check["recommendations"]]
    advice += [text for issue in issues for text in issue["recommendations"]]
    memory_status = system.get("memory", {}).get("status")
    if memory_status == "degraded":
        advice.append("Consider increasing system memory or optimizing memory usage")
    if system.get("disk", {}).get("status") == "degraded":
        advice.append("Free up disk space or move storage to larger volume")
    if performance["overall_status"] == "degraded":
        advice += _PERFORMANCE_DEGRADED_ADVICE
        if config.performance_mode == "balanced":
            advice.append("Consider switching to 'speed' performance mode for better performance")
    if config.cache_size_mb < 100 and memory_status == "healthy":
        advice.append("Consider increasing cache size for better performance")
    return list(dict.fromkeys(advice))


def analytics_advice(trends: dict[str, Any], scores: list[int]) -> list[str]:
    """get_performance_analytics() advice: slow operations, then the latest optimization score."""
    advice = []
    for name, trend in trends.items():
        if trend["current_avg_ms"] > 500:
            advice.append(f"Optimize {name} - current average {trend['current_avg_ms']:.1f}ms is high")
        elif trend["current_avg_ms"] > 200:
            advice.append(f"Monitor {name} performance - approaching high latency")
    if scores and scores[-1] < 70:
        advice.append("Overall optimization score is low - review configuration settings")
    elif scores and scores[-1] < 85:
        advice.append("Good optimization but room for improvement")
    return advice


def overall_status(issues: list[dict[str, Any]]) -> str:
    """error on any critical or error issue, degraded on any warning, else healthy."""
    severities = {issue["severity"] for issue in issues}
    if severities & {"critical", "error"}:
        return "error"
    return "degraded" if "warning" in severities else "healthy"


def estimate_resolution_time(effort: str, severity: str) -> str:
    return _RESOLUTION_TIME.get((effort, severity), _DEFAULT_RESOLUTION_TIME)


def _diagnose_one(issue: dict[str, Any]) -> dict[str, Any]:
    if issue["type"] == "performance":
        causes, steps, effort = _PERFORMANCE
    elif issue["type"] == "component" and issue["component"] == "storage":
        causes, steps, effort = _STORAGE
    elif issue["type"] == "component" and issue["component"] == "bridge":
        causes, steps, effort = _BRIDGE
    else:
        causes, steps, effort = _UNKNOWN
    return {"issue": issue, "probable_causes": list(causes), "diagnostic_steps": list(steps),
            "resolution_suggestions": list(issue.get("recommendations", [])), "estimated_effort": effort}


def _resolution_plan(diagnostics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Critical and error issues first, then warnings, then the rest; lower effort first within each."""
    def priority(item: dict[str, Any]) -> tuple[int, int]:
        rank = 0 if item["severity"] in ("critical", "error") else 1 if item["severity"] == "warning" else 2
        return rank, _EFFORT_ORDER.get(item["effort"], 2)
    plan = [{"issue_type": d["issue"].get("type"), "severity": d["issue"].get("severity", "info"),
             "effort": d["estimated_effort"], "actions": d["resolution_suggestions"],
             "estimated_time": estimate_resolution_time(d["estimated_effort"], d["issue"].get("severity", "info"))}
            for d in diagnostics]
    return sorted(plan, key=priority)


def _priority_actions(diagnostics: list[dict[str, Any]]) -> list[str]:
    """The first two suggestions of each critical issue, then the first of each low-effort error or warning."""
    actions = [text for d in diagnostics if d["issue"].get("severity") == "critical"
               for text in d["resolution_suggestions"][:2]]
    actions += [text for d in diagnostics
                if d["estimated_effort"] == "low" and d["issue"].get("severity") in ("error", "warning")
                for text in d["resolution_suggestions"][:1]]
    return list(dict.fromkeys(actions))


def diagnose(report: dict[str, Any]) -> dict[str, Any]:
    """diagnose_issues()'s answer for a comprehensive health report."""
    diagnostics = [_diagnose_one(issue) for issue in report.get("issues_detected", [])]
    return {"timestamp": iso(utc_now()), "issues_found": len(diagnostics),
            "diagnostics": diagnostics, "resolution_plan": _resolution_plan(diagnostics),
            "priority_actions": _priority_actions(diagnostics)}
