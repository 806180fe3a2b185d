"""check_dashboard.py REPO: the Grafana dashboard (deploy/grafana/dgptq-dashboard.json) has its
stable uid, a Prometheus datasource variable that every panel and query uses, sane panels, and
every PromQL expression parses: with Grafana's and the dashboard's variables substituted, the
expressions become recording rules in a temporary file that `promtool check rules` must
accept. The dashboard and the alerts (deploy/prometheus/alerts.yml) name only metrics the
daemons register (the names in coordinator/metrics.cc and worker/daemon/worker_metrics.cc).
Exit 77 (CTest skip) without promtool."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

# Grafana's built-in range variables; any duration parses.
BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
SOURCES = ("coordinator/metrics.cc", "worker/daemon/worker_metrics.cc")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def served_metrics(repo):
    """Metric names the daemons register, with the series names of histograms."""
    names = set()
    for src in SOURCES:
        with open(os.path.join(repo, src)) as f:
            names |= set(re.findall(r'"(dgptq_\w+)"', f.read()))
    return names | {n + s for n in names for s in HISTOGRAM_SUFFIXES}


def unknown_metrics(text, served):
    return sorted(set(re.findall(r"\b(dgptq_\w+)", text)) - served)


def substitute(expr, variables):
    def value(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in variables:
            raise ValueError(f"unknown variable ${name} in {expr!r}")
        return variables[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", value, expr)


def main():
    if not shutil.which("promtool"):
        print("SKIP: promtool not found (Debian package prometheus)")
        return 77
    repo = sys.argv[1]
    with open(os.path.join(repo, "deploy/grafana/dgptq-dashboard.json")) as f:
        dash = json.load(f)
    served = served_metrics(repo)
    errors = []
    with open(os.path.join(repo, "deploy/prometheus/alerts.yml")) as f:
        for name in unknown_metrics(f.read(), served):
            errors.append(f"alerts.yml: {name} is not a metric the daemons serve")
    if dash.get("uid") != "dgptq-overview":
        errors.append(f"uid is {dash.get('uid')!r}, not 'dgptq-overview'")
    templating = {v["name"]: v for v in dash["templating"]["list"]}
    ds = templating.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errors.append("no 'datasource' variable of type datasource over prometheus")
    # Query variables hold label values and stand in regex matchers: any regex will do.
    variables = dict(BUILTINS)
    for name, var in templating.items():
        variables[name] = ".*" if var["type"] == "query" else "prometheus"
        if var["type"] == "query" and var["datasource"] != {"type": "prometheus", "uid": "${datasource}"}:
            errors.append(f"variable {name}: datasource is not ${{datasource}}")
    exprs, ids = [], set()
    for panel in dash["panels"]:
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if panel["id"] in ids:
            errors.append(f"{where}: duplicate id")
        ids.add(panel["id"])
        g = panel["gridPos"]
        if g["x"] + g["w"] > 24:
            errors.append(f"{where}: wider than the 24-column grid")
        for obj in [panel] + panel["targets"]:
            if obj.get("datasource") != {"type": "prometheus", "uid": "${datasource}"}:
                errors.append(f"{where}: datasource is not the ${{datasource}} variable")
        if not panel["targets"]:
            errors.append(f"{where}: no queries")
        for t in panel["targets"]:
            try:
                expr = substitute(t["expr"], variables)
            except ValueError as e:
                errors.append(f"{where}: {e}")
                continue
            if not re.search(r"\bdgptq_", expr):
                errors.append(f"{where}: {t['expr']!r} names no dgptq metric")
            for name in unknown_metrics(expr, served):
                errors.append(f"{where}: {name} is not a metric the daemons serve")
            exprs.append((where, expr))
    with tempfile.TemporaryDirectory() as tmp:
        rules = os.path.join(tmp, "dashboard_rules.yml")
        with open(rules, "w") as f:
            f.write("groups:\n  - name: dashboard\n    rules:\n")
            for i, (where, expr) in enumerate(exprs):
                f.write(f"      - record: dashboard:expr_{i}\n        expr: {json.dumps(expr)}\n")
        check = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, text=True)
        if check.returncode != 0:
            errors.append("promtool check rules:\n" + check.stdout + check.stderr)
    for e in errors:
        print("FAIL", e)
    print(f"dashboard: {len(dash['panels'])} panels, {len(exprs)} expressions checked by promtool")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
