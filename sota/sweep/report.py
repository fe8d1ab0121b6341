"""Frontier reports of result rows: `frontier.csv` (every point, frontier flag, key values), `frontier.png`
(one panel per accuracy-versus-cost pair, frontier highlighted) and a self-contained `frontier.html`
(hand-written SVG + JS with the data inlined: selectable axes, hover shows a point's config, frontier
highlighted, failures table). `compare` overlays several sweeps, one colour and one frontier each.

Frontier pairs are the primary objectives (`objectives`) first, then every accuracy x cost pair of the report
settings whose keys both hold values somewhere (so `efficiency.tpot_ms` shows up only where it was measured).
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sota.sweep.frontier import (
    Objective,
    Row,
    frontier_pairs,
    has_values,
    is_ok,
    mark_frontier,
    number,
    pareto_front,
    parse_objective,
)
from sota.sweep import hypervolume
from sota.sweep.points import describe
from sota.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

# Sections of results.json whose numbers can be axes (config holds settings, not measurements).
NUMERIC_SECTIONS = ("metrics", "model", "efficiency", "timing", "compression", "data")
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
FRONTIER_COLOR = "#d62728"


class ObjectiveError(ValueError):
    """An objective key that no finished point has."""


@dataclass
class ReportSettings:
    objectives: list[Objective]
    accuracy: list[Objective] = field(default_factory=list)
    cost: list[Objective] = field(default_factory=list)
    hypervolume_reference: dict[str, Any] = field(default_factory=dict)   # see sota/sweep/hypervolume.py

    @classmethod
    def from_config(cls, objectives: Sequence[Any], report: Mapping[str, Any] | None = None) -> ReportSettings:
        report = report or {}
        objs = [parse_objective(o) for o in objectives]
        if len(objs) < 2:
            raise ObjectiveError(f"objectives needs at least two entries (accuracy, then cost), got {list(objectives)}")
        settings = cls(objs, [parse_objective(o) for o in report.get("accuracy") or []],
                       [parse_objective(o) for o in report.get("cost") or []],
                       dict(report.get("hypervolume_reference") or {}))
        hypervolume.reference_point([], objs, settings.hypervolume_reference)  # names checked before any run
        return settings

    def record(self) -> dict[str, Any]:
        return {"objectives": [str(o) for o in self.objectives],
                "report": {"accuracy": [str(o) for o in self.accuracy], "cost": [str(o) for o in self.cost],
                           "hypervolume_reference": self.hypervolume_reference}}


def numeric_keys(rows: Sequence[Row]) -> list[str]:
    """Every key (in the frontier module's addressing) that holds a number in some ok row."""
    keys: dict[str, None] = {}
    for row in rows:
        if not is_ok(row):
            continue
        for section in NUMERIC_SECTIONS:
            for name, value in (row.get(section) or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    keys[f"{section}.{name}"] = None
    return list(keys)


def check_objectives(rows: Sequence[Row], objectives: Sequence[Objective]) -> None:
    """Raise ObjectiveError for an objective that no ok row has (where some row is ok: with every point
    failed there is nothing to check, and the report shows the failures)."""
    if not any(is_ok(r) for r in rows):
        return
    missing = [o for o in objectives if not has_values(rows, o.key)]
    if missing:
        import difflib

        have = numeric_keys(rows)
        hints = []
        for o in missing:
            close = difflib.get_close_matches(o.key, have, n=3, cutoff=0.5)
            hints.append(f"{o.key}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise ObjectiveError(
            f"objective key(s) {'; '.join(hints)} hold a number in no finished point. Keys are "
            "SECTION.NAME with the metric's slashes kept (metrics.asr/wer, efficiency.peak_memory_mb); "
            f"keys present: {', '.join(have) or '(none)'}")


def _short(row: Row) -> str:
    params = row.get("params") or {}
    if params:
        return describe(params)
    return " ".join(row.get("overrides") or []) or str(row.get("id"))


# ------------------------------------------------------------------------------------------------- table

def table(rows: Sequence[Row], settings: ReportSettings, group_field: str | None = None) -> list[dict[str, Any]]:
    """Flat rows for frontier.csv and notebooks: ok points first (by the primary cost, frontier flagged over
    the primary objectives, per group when `group_field` is set), then failed ones."""
    keys = list(dict.fromkeys([o.key for o in settings.objectives]
                              + [o.key for o in settings.accuracy + settings.cost if has_values(rows, o.key)]))
    marked: list[Row] = []
    for group in _groups(rows, group_field):
        marked += mark_frontier([r for r in rows if _group(r, group_field) == group], settings.objectives)
    axes = sorted({k for r in rows for k in (r.get("params") or {})})
    cost = settings.objectives[1]
    sign = 1 if cost.direction == "min" else -1

    def order(r: Row) -> tuple:
        c = number(r, cost.key)
        return (not is_ok(r), c is None, sign * c if c is not None else 0.0, str(r.get("id")))

    out = []
    for r in sorted(marked, key=order):
        flat: dict[str, Any] = {"id": r.get("id")}
        if group_field:
            flat[group_field] = r.get(group_field)
        flat.update({"status": r.get("status"), "on_frontier": r.get("on_frontier")})
        flat.update({k: number(r, k) for k in keys})
        flat.update({f"param:{a}": (r.get("params") or {}).get(a) for a in axes})
        flat["overrides"] = " ".join(r.get("overrides") or [])
        # one line per point, so that the CSV greps well (frontier.html keeps the error's lines)
        flat["error"] = " ".join(str(r.get("error") or "").split()) if not is_ok(r) else ""
        out.append(flat)
    return out


def _group(row: Row, group_field: str | None) -> Any:
    return row.get(group_field) if group_field else None


def _groups(rows: Sequence[Row], group_field: str | None) -> list[Any]:
    return list(dict.fromkeys(_group(r, group_field) for r in rows))


def write_csv(path: Path, flat: Sequence[Mapping[str, Any]]) -> None:
    buf = io.StringIO()
    if flat:
        writer = csv.DictWriter(buf, fieldnames=list(flat[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(flat)
    atomic_write_text(path, buf.getvalue())


# --------------------------------------------------------------------------------------------------- png

def plot_frontiers(rows: Sequence[Row], pairs: Sequence[tuple[Objective, Objective]], title: str = "",
                   group_field: str | None = None) -> Any:
    """A matplotlib Figure: one panel per (accuracy, cost) pair, cost on x, accuracy on y; frontier points
    circled and joined by a staircase; one colour per group."""
    # The object-oriented Figure needs no pyplot state or display backend (files here and in CI).
    from matplotlib.figure import Figure

    n = max(1, len(pairs))
    cols = min(2, n)
    nrows = (n + cols - 1) // cols
    fig = Figure(figsize=(6.4 * cols, 4.6 * nrows), layout="constrained")  # constrained: room for the suptitle
    axs = fig.subplots(nrows, cols, squeeze=False)
    groups = _groups(rows, group_field)
    for ax, (acc, cost) in zip(axs.flat, pairs):
        for gi, group in enumerate(groups):
            mine = [r for r in rows if _group(r, group_field) == group]
            color = COLORS[gi % len(COLORS)] if group_field else "#7f7f7f"
            pts = [r for r in mine if is_ok(r) and number(r, acc.key) is not None and number(r, cost.key) is not None]
            ax.scatter([number(r, cost.key) for r in pts], [number(r, acc.key) for r in pts], s=28, color=color,
                       alpha=0.75, label=str(group) if group_field else "points", zorder=2)
            front = sorted(pareto_front(mine, [acc, cost]), key=lambda r: number(r, cost.key))  # type: ignore[arg-type,return-value]
            if front:
                xs, ys = [number(r, cost.key) for r in front], [number(r, acc.key) for r in front]
                edge = FRONTIER_COLOR if not group_field else color
                ax.plot(xs, ys, drawstyle="steps-post", color=edge, lw=1.5, zorder=1)
                ax.scatter(xs, ys, s=90, facecolors="none", edgecolors=edge, linewidths=2, zorder=3,
                           label="frontier" if not group_field else None)
                if not group_field:  # tied points share a spot: one label naming them all
                    spots: dict[tuple[float, float], list[str]] = {}
                    for r, x, y in zip(front, xs, ys):
                        spots.setdefault((x, y), []).append(str(r.get("id")))  # type: ignore[arg-type]
                    for (x, y), ids in spots.items():
                        ax.annotate(", ".join(ids), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=7)
        ax.set_xlabel(f"{cost.label} ({cost.direction})")
        ax.set_ylabel(f"{acc.label} ({acc.direction})")
        ax.set_title(f"{acc.label} vs {cost.label}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axs.flat)[len(pairs):]:
        ax.axis("off")
    failed = sum(not is_ok(r) for r in rows)
    fig.suptitle(f"{title}: {len(rows) - failed} ok, {failed} failed" if title else "", fontsize=11)
    return fig


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def write_png(path: Path, fig: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(figure_png(fig))
    tmp.replace(path)


# -------------------------------------------------------------------------------------------------- html

def html_data(rows: Sequence[Row], pairs: Sequence[tuple[Objective, Objective]], title: str,
              group_field: str | None = None) -> dict[str, Any]:
    """Everything frontier.html draws, frontiers precomputed here (one implementation of dominance)."""
    keys = list(dict.fromkeys([o.key for p in pairs for o in p]))
    groups = _groups(rows, group_field)
    frontiers: dict[str, dict[str, list[str]]] = {}
    for acc, cost in pairs:
        frontiers[f"{acc.key}|{cost.key}"] = {
            str(g): [str(r["id"]) for r in pareto_front([r for r in rows if _group(r, group_field) == g], [acc, cost])]
            for g in groups}
    return {
        "title": title,
        "groups": [str(g) for g in groups],
        "grouped": bool(group_field),
        "accuracy": [_axis(o) for o in dict.fromkeys(p[0] for p in pairs)],
        "cost": [_axis(o) for o in dict.fromkeys(p[1] for p in pairs)],
        "pairs": [f"{a.key}|{c.key}" for a, c in pairs],
        "frontiers": frontiers,
        "rows": [{"id": str(r.get("id")), "group": str(_group(r, group_field)), "status": r.get("status"),
                  "error": r.get("error"), "overrides": list(r.get("overrides") or []),
                  "label": _short(r), "values": {k: number(r, k) for k in keys}} for r in rows],
    }


def _axis(o: Objective) -> dict[str, str]:
    return {"key": o.key, "label": o.label, "direction": o.direction}


def script_json(data: Any) -> str:
    """`data` as JSON to inline in a <script>: `</` escaped so no string can close the script."""
    return json.dumps(data, default=str).replace("</", "<\\/")


def render_html(data: Mapping[str, Any]) -> str:
    payload = script_json(data)
    return _HTML.replace("__TITLE__", html.escape(str(data.get("title") or "frontier"))).replace("__DATA__", payload)


# ------------------------------------------------------------------------------------------------ writer

def write_report(directory: Path, rows: Sequence[Row], settings: ReportSettings, title: str,
                 stem: str = "frontier", group_field: str | None = None) -> dict[str, Path]:
    """Write <stem>.csv, <stem>.png, <stem>.html and <stem>_hypervolume.json into `directory`; returns their
    paths."""
    check_objectives(rows, settings.objectives)
    pairs = frontier_pairs(rows, settings.objectives, settings.accuracy, settings.cost)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {ext: directory / f"{stem}.{ext}" for ext in ("csv", "png", "html")}
    paths["hypervolume"] = directory / f"{stem}_hypervolume.json"
    write_csv(paths["csv"], table(rows, settings, group_field))
    write_png(paths["png"], plot_frontiers(rows, pairs, title, group_field))
    atomic_write_text(paths["html"], render_html(html_data(rows, pairs, title, group_field)))
    groups = {str(g): [r for r in rows if _group(r, group_field) == g] for g in _groups(rows, group_field)} \
        if group_field else None
    hv = hypervolume.summary(rows, settings.objectives, settings.hypervolume_reference, groups)
    atomic_write_json(paths["hypervolume"], hv)
    front = pareto_front(rows, settings.objectives) if not group_field else []
    volumes = {g: v["hypervolume"] for g, v in hv["groups"].items()} if groups else hv["hypervolume"]
    log.info("report: %d points (%d failed)%s, hypervolume %s (reference %s%s) -> %s", len(rows),
             sum(not is_ok(r) for r in rows),
             f", {len(front)} on the {' vs '.join(o.label for o in settings.objectives)} frontier"
             if not group_field else "", _fmt(volumes), hv["reference"],
             f"; from the data: {', '.join(hv['reference_from_data'])}" if hv["reference_from_data"] else "",
             directory)
    return paths


def _fmt(volumes: float | Mapping[str, float]) -> str:
    if isinstance(volumes, Mapping):
        return ", ".join(f"{g} {v:.4g}" for g, v in volumes.items())
    return f"{volumes:.4g}"


def compare(directories: Sequence[str | Path], out: Path, settings: ReportSettings) -> dict[str, Path]:
    """Overlay several sweeps (or multirun dirs): compare.csv/png/html in `out`, one colour and frontier each."""
    from sota.sweep.sweepdir import load_rows, sweep_name

    rows: list[Row] = []
    names: list[str] = []
    for d in directories:
        name = sweep_name(d)
        while name in names:  # two dirs of the same sweep name (e.g. two runs of one config)
            name = f"{name}'"
        names.append(name)
        rows += [{**r, "sweep": name} for r in load_rows(d)]
    return write_report(out, rows, settings, "compare: " + ", ".join(names), stem="compare", group_field="sweep")


_HTML = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:18px;color:#222;background:#fff}
h1{font-size:19px;margin:0 0 6px} h2{font-size:15px;margin:20px 0 6px}
.controls{margin:8px 0;display:flex;gap:18px;flex-wrap:wrap;align-items:center} select{font-size:13px}
#plot{border:1px solid #ddd;background:#fff} .axis text{font-size:11px;fill:#444} .axis line,.axis path{stroke:#999}
.axis line.grid{stroke:#eee} #tip{position:fixed;pointer-events:none;background:#fffff4;border:1px solid #888;
padding:6px 8px;font-size:12px;max-width:520px;display:none;box-shadow:2px 2px 6px rgba(0,0,0,.2);white-space:pre-wrap}
table{border-collapse:collapse;font-size:12px} td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4} tr.front td{background:#fdecec;font-weight:600} .muted{color:#777} code{font-size:11px}
</style></head><body>
<h1 id="title"></h1><div id="summary" class="muted"></div>
<div class="controls">
 <label>accuracy (y) <select id="acc"></select></label>
 <label>cost (x) <select id="cost"></select></label>
 <label><input type="checkbox" id="logx"> log x</label>
</div>
<svg id="plot" width="860" height="500"></svg>
<div id="tip"></div>
<h2>Points <span class="muted" id="frontnote"></span></h2><table id="points"></table>
<h2>Failures</h2><div id="nofail" class="muted"></div><table id="failures"></table>
<script>
const DATA = __DATA__;
const COLORS = ["#1f77b4","#ff7f0e","#2ca02c","#9467bd","#8c564b","#e377c2","#17becf","#bcbd22"];
const FRONT = "#d62728", NS = "http://www.w3.org/2000/svg";
const $ = id => document.getElementById(id);
function el(tag, attrs, parent){const e=document.createElementNS(NS,tag);for(const k in attrs)e.setAttribute(k,attrs[k]);if(parent)parent.appendChild(e);return e;}
function fmt(v){if(v===null||v===undefined)return "";const a=Math.abs(v);if(a!==0&&(a>=1e5||a<1e-3))return v.toExponential(3);return (+v.toPrecision(4)).toString();}
function esc(s){return String(s===null||s===undefined?"":s).replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));}
function ticks(lo,hi,n,log){if(log){const out=[];for(let e=Math.floor(Math.log10(lo));e<=Math.ceil(Math.log10(hi));e++)for(const m of [1,2,5]){const v=m*Math.pow(10,e);if(v>=lo&&v<=hi)out.push(v);}return out;}
 const span=hi-lo||1,step0=span/n,mag=Math.pow(10,Math.floor(Math.log10(step0)));const step=[1,2,5,10].map(m=>m*mag).find(s=>s>=step0);
 const out=[];for(let v=Math.ceil(lo/step)*step;v<=hi+1e-12;v+=step)out.push(+v.toPrecision(12));return out;}
function groupColor(g){return DATA.grouped?COLORS[DATA.groups.indexOf(g)%COLORS.length]:"#7f7f7f";}
function fill(sel, axes){for(const a of axes){const o=document.createElement("option");o.value=a.key;o.textContent=a.label+" ("+a.direction+")";sel.appendChild(o);}}
function pairKey(){return $("acc").value+"|"+$("cost").value;}
function axisOf(list,key){return list.find(a=>a.key===key);}
function draw(){
 const svg=$("plot");while(svg.firstChild)svg.removeChild(svg.firstChild);
 const acc=axisOf(DATA.accuracy,$("acc").value), cost=axisOf(DATA.cost,$("cost").value), logx=$("logx").checked;
 const fr=DATA.frontiers[pairKey()]||{}; const onFront=new Set(); for(const g in fr)for(const id of fr[g])onFront.add(g+"\u0000"+id);
 const pts=DATA.rows.filter(r=>r.status==="ok"&&r.values[acc.key]!=null&&r.values[cost.key]!=null&&(!logx||r.values[cost.key]>0));
 const W=+svg.getAttribute("width"),H=+svg.getAttribute("height"),m={l:70,r:20,t:20,b:50};
 if(!pts.length){el("text",{x:W/2,y:H/2,"text-anchor":"middle"},svg).textContent="no finished point has both values";return;}
 let xs=pts.map(r=>r.values[cost.key]),ys=pts.map(r=>r.values[acc.key]);
 let x0=Math.min(...xs),x1=Math.max(...xs),y0=Math.min(...ys),y1=Math.max(...ys);
 if(logx){x0=Math.log10(x0);x1=Math.log10(x1);} const px=(x1-x0)*0.06||0.5, py=(y1-y0)*0.08||0.05; x0-=px;x1+=px;y0-=py;y1+=py;
 const X=v=>m.l+((logx?Math.log10(v):v)-x0)/(x1-x0)*(W-m.l-m.r), Y=v=>H-m.b-(v-y0)/(y1-y0)*(H-m.t-m.b);
 const gx=el("g",{class:"axis"},svg);
 for(const t of ticks(logx?Math.pow(10,x0):x0,logx?Math.pow(10,x1):x1,7,logx)){el("line",{x1:X(t),x2:X(t),y1:m.t,y2:H-m.b,class:"grid"},gx);el("text",{x:X(t),y:H-m.b+16,"text-anchor":"middle"},gx).textContent=fmt(t);}
 for(const t of ticks(y0,y1,6,false)){el("line",{x1:m.l,x2:W-m.r,y1:Y(t),y2:Y(t),class:"grid"},gx);el("text",{x:m.l-6,y:Y(t)+4,"text-anchor":"end"},gx).textContent=fmt(t);}
 el("rect",{x:m.l,y:m.t,width:W-m.l-m.r,height:H-m.t-m.b,fill:"none",stroke:"#999"},gx);
 el("text",{x:(W+m.l)/2,y:H-12,"text-anchor":"middle"},gx).textContent=cost.label+" ("+cost.direction+")";
 el("text",{x:16,y:(H-m.b)/2,"text-anchor":"middle",transform:"rotate(-90 16 "+((H-m.b)/2)+")"},gx).textContent=acc.label+" ("+acc.direction+")";
 for(const g of DATA.groups){const f=(fr[g]||[]).map(id=>pts.find(r=>r.id===id&&r.group===g)).filter(Boolean).sort((a,b)=>a.values[cost.key]-b.values[cost.key]);
  if(f.length<1)continue; let d=""; f.forEach((r,i)=>{const x=X(r.values[cost.key]),y=Y(r.values[acc.key]);d+=i?" H"+x+" V"+y:"M"+x+" "+y;});
  el("path",{d:d,fill:"none",stroke:DATA.grouped?groupColor(g):FRONT,"stroke-width":2},svg);}
 for(const r of pts){const f=onFront.has(r.group+"\u0000"+r.id);
  const c=el("circle",{cx:X(r.values[cost.key]),cy:Y(r.values[acc.key]),r:f?7:5,fill:f&&!DATA.grouped?FRONT:groupColor(r.group),"fill-opacity":f?0.95:0.6,stroke:f?"#000":"none","stroke-width":1.2,class:f?"frontier":"point"},svg);
  c.addEventListener("mousemove",e=>tip(e,r,f,acc,cost)); c.addEventListener("mouseleave",()=>{$("tip").style.display="none";});}
 if(DATA.grouped){let y=m.t+14;for(const g of DATA.groups){el("circle",{cx:W-m.r-150,cy:y-4,r:5,fill:groupColor(g)},svg);el("text",{x:W-m.r-140,y:y,"font-size":12},svg).textContent=g;y+=16;}}
 tableOf(acc,cost,onFront);
}
function tip(e,r,f,acc,cost){const t=$("tip");
 let s="<b>"+esc(r.id)+"</b>"+(DATA.grouped?" ["+esc(r.group)+"]":"")+(f?" \u2014 <b style='color:"+FRONT+"'>on the frontier</b>":"")+"\n";
 s+=esc(acc.label)+" = "+fmt(r.values[acc.key])+"\n"+esc(cost.label)+" = "+fmt(r.values[cost.key])+"\n\n<b>config</b>\n"+r.overrides.map(esc).join("\n");
 const other=Object.keys(r.values).filter(k=>k!==acc.key&&k!==cost.key&&r.values[k]!=null);
 if(other.length)s+="\n\n"+other.map(k=>esc(k)+" = "+fmt(r.values[k])).join("\n");
 t.innerHTML=s;t.style.display="block";t.style.left=Math.min(e.clientX+14,window.innerWidth-540)+"px";t.style.top=(e.clientY+14)+"px";}
function tableOf(acc,cost,onFront){
 const rows=DATA.rows.filter(r=>r.status==="ok").sort((a,b)=>(a.values[cost.key]??Infinity)-(b.values[cost.key]??Infinity));
 let h="<tr><th>id</th>"+(DATA.grouped?"<th>sweep</th>":"")+"<th>frontier</th><th>"+esc(acc.label)+"</th><th>"+esc(cost.label)+"</th><th>config</th></tr>";
 for(const r of rows){const f=onFront.has(r.group+"\u0000"+r.id);h+="<tr"+(f?" class='front'":"")+"><td>"+esc(r.id)+"</td>"+(DATA.grouped?"<td>"+esc(r.group)+"</td>":"")+"<td>"+(f?"\u2713":"")+"</td><td>"+fmt(r.values[acc.key])+"</td><td>"+fmt(r.values[cost.key])+"</td><td><code>"+esc(r.label)+"</code></td></tr>";}
 $("points").innerHTML=h; $("frontnote").textContent="("+onFront.size+" on the frontier, highlighted)";}
function failures(){const bad=DATA.rows.filter(r=>r.status!=="ok");
 if(!bad.length){$("nofail").textContent="none";return;}
 let h="<tr><th>id</th>"+(DATA.grouped?"<th>sweep</th>":"")+"<th>error</th><th>config</th></tr>";
 for(const r of bad)h+="<tr><td>"+esc(r.id)+"</td>"+(DATA.grouped?"<td>"+esc(r.group)+"</td>":"")+"<td>"+esc((r.error||"").slice(0,600))+"</td><td title='"+esc(r.overrides.join(" "))+"'><code>"+esc(r.label)+"</code></td></tr>";
 $("failures").innerHTML=h;}
$("title").textContent=DATA.title;
const nok=DATA.rows.filter(r=>r.status==="ok").length;
$("summary").textContent=nok+" finished points, "+(DATA.rows.length-nok)+" failed. Hover a point for its config.";
fill($("acc"),DATA.accuracy); fill($("cost"),DATA.cost);
for(const id of ["acc","cost"])$(id).addEventListener("change",()=>{
 if(!DATA.frontiers[pairKey()]){const other=id==="acc"?"cost":"acc",want=$(id).value;
  const p=DATA.pairs.find(k=>id==="acc"?k.startsWith(want+"|"):k.endsWith("|"+want)); if(p)$(other).value=id==="acc"?p.split("|")[1]:p.split("|")[0];}
 draw();});
$("logx").addEventListener("change",draw);
if(DATA.pairs.length){const [a,c]=DATA.pairs[0].split("|");$("acc").value=a;$("cost").value=c;draw();}
failures();
</script></body></html>
"""
