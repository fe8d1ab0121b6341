"""`python sweep.py review DIR [--reference ID] [--out FILE] [--audio-mb 30]`: one self-contained HTML page to
review a sweep: the frontier (plotly), and for the point clicked (shift-click: a second one) its config diff
from the reference point, its metrics with the paired WER intervals of `sweep.py paired`, its latency
breakdown, and every test clip with its audio, reference text, this point's answer, the reference point's
answer and the per-clip WER.

The page needs nothing at view time: plotly.js and the data are inlined, and the clips' audio is embedded as
Ogg Vorbis (16 kHz mono, as the model heard it) up to `--audio-mb`; clips past that budget, or whose audio
cannot be found, get no player, and the page and the log say which and why. A clip's audio is found through
the manifest its run recorded (results.json `data.splits.<split>.manifest`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sota.sweep.frontier import Row, frontier_pairs, is_ok, lookup
from sota.sweep.paired import PREDICTIONS, SETS, pick_reference, point_line, run_dir_of, set_errors
from sota.sweep.report import NUMERIC_SECTIONS, ReportSettings, check_objectives, html_data, script_json
from sota.sweep.sweepdir import SweepDirError, load_rows, sweep_name
from sota.utils.io import atomic_write_text

log = logging.getLogger(__name__)

REVIEW_HTML = "review.html"
# paired.SETS' column prefixes -> the split each answers file holds (its manifest in data.splits.<split>)
SPLIT_OF = {"": "test", "real_": "real"}
AUDIO_MB = 30.0
LATENCY_KEYS = ("ttft_ms", "tpot_ms", "e2e_ms", "rtf", "real_ttft_ms", "real_tpot_ms", "real_e2e_ms", "real_rtf")


class ReviewError(SweepDirError):
    """A review that cannot be built; the message names the path or value at fault."""


# ------------------------------------------------------------------------------------------------ clips

def read_answers(run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """{split: the run's answer rows} for each answers file it wrote (the test split, the real-speech set)."""
    out = {}
    for prefix, name, _ in SETS:
        path = run_dir / name
        if path.is_file():
            try:
                out[SPLIT_OF[prefix]] = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            except ValueError as err:  # bad JSON or bad UTF-8
                raise ReviewError(f"{path} is unreadable ({type(err).__name__}: {err})") from None
        elif name == PREDICTIONS:
            raise ReviewError(f"{path} is missing: a review shows each point's answers")
    return out


def clip_errors_by_split(run_dir: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """paired's word errors per clip ({split: {clip id: (errors, reference words)}}), keyed by split."""
    return {SPLIT_OF[prefix]: errors for prefix, errors in set_errors(run_dir).items()}


def audio_paths(row: Row) -> tuple[dict[tuple[str, str], Path], list[str]]:
    """{(split, clip id): audio file} from the manifests `row`'s run recorded, and a note per split whose
    manifest is not recorded or not readable (those clips get no player)."""
    from sota.data.manifest import BadSample, read_manifest

    paths: dict[tuple[str, str], Path] = {}
    notes = []
    for split in SPLIT_OF.values():
        manifest = lookup(row, f"data.splits.{split}.manifest")
        if manifest is None and split == "real":
            manifest = (row.get("metrics") or {}).get("real/manifest")
        if manifest is None:
            if lookup(row, f"data.splits.{split}") is not None:
                notes.append(f"{split}: the run did not record its manifest (data.splits.{split}.manifest), so its "
                             "clips' audio cannot be found")
            continue
        try:
            samples = read_manifest(manifest, on_bad="skip", unlabelled=True)
        except (OSError, BadSample) as err:
            notes.append(f"{split}: {err}")
            continue
        paths.update({(split, s.id): s.path for s in samples})
    return paths, notes


def encode_clip(path: Path) -> bytes:
    """The clip as the model heard it (16 kHz mono), as Ogg Vorbis: a tenth of the WAV's bytes, and quick to
    write (libsndfile's Opus encoder took ten times as long per clip)."""
    import soundfile as sf

    from sota.data.audio import SAMPLE_RATE, load_audio

    buf = io.BytesIO()
    sf.write(buf, load_audio(path), SAMPLE_RATE, format="OGG", subtype="VORBIS")
    return buf.getvalue()


def embed_audio(clips: Sequence[Mapping[str, Any]], paths: Mapping[tuple[str, str], Path],
                budget_bytes: int) -> tuple[dict[str, str], dict[str, str]]:
    """({clip key: data URI}, {clip key: why it has no player}) for `clips` in order, within `budget_bytes`."""
    from sota.data.audio import BadAudioFile

    embedded: dict[str, str] = {}
    missing: dict[str, str] = {}
    used = 0
    for clip in clips:
        path = paths.get((clip["split"], clip["id"]))
        if path is None:
            missing[clip["key"]] = "its audio file is not known (no manifest recorded, or the clip is not in it)"
            continue
        if used >= budget_bytes:
            missing[clip["key"]] = f"past the page's audio budget (--audio-mb {budget_bytes / 1e6:g})"
            continue
        try:
            data = encode_clip(path)
        except (OSError, BadAudioFile, RuntimeError) as err:  # soundfile raises RuntimeError on bad files
            missing[clip["key"]] = f"{path}: {err}"
            continue
        if used + len(data) > budget_bytes:
            missing[clip["key"]] = f"past the page's audio budget (--audio-mb {budget_bytes / 1e6:g})"
            used = budget_bytes
            continue
        used += len(data)
        embedded[clip["key"]] = "data:audio/ogg;base64," + base64.b64encode(data).decode("ascii")
    return embedded, missing


# ----------------------------------------------------------------------------------------------- points

def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def config_diff(reference: Mapping[str, Any] | None, config: Mapping[str, Any] | None,
                run_dirs: tuple[Path, Path] | None = None) -> list[list[str]]:
    """[[key, the reference's value, this point's value], ...] for every config key whose value differs. With
    `run_dirs` (the reference's, this point's), each run's own directory reads `<run dir>` first: every point
    writes into its own (paths.output_dir, logger.save_dir), which is no difference of configuration."""
    ref, mine = _flatten(reference or {}), _flatten(config or {})
    if run_dirs:
        ref, mine = (_own_dir(d, run_dir) for d, run_dir in ((ref, run_dirs[0]), (mine, run_dirs[1])))
    return [[k, json.dumps(ref.get(k)), json.dumps(mine.get(k))] for k in sorted(set(ref) | set(mine))
            if ref.get(k) != mine.get(k) and k]


def _own_dir(flat: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    own = str(run_dir)
    return {k: v.replace(own, "<run dir>") if isinstance(v, str) else v for k, v in flat.items()}


def numbers(row: Row) -> dict[str, float]:
    """Every number of the sections a frontier can plot, as `section.name` keys."""
    out = {}
    for section in NUMERIC_SECTIONS:
        for name, value in (row.get(section) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{section}.{name}"] = value
    return out


def _recorded_dir(row: Row, run_dir: Path) -> Path:
    """The run dir as its config recorded it (the sweep dir may have moved since)."""
    return Path(lookup(row, "config.paths.output_dir") or run_dir)


def latency(row: Row) -> dict[str, Any]:
    """The latency regions the run measured (sota.measure: features, encoder, connector, prefill, decode per
    token; efficiency.breakdown_ms, in its order) and the totals."""
    eff = row.get("efficiency") or {}
    return {"mode": eff.get("mode"), "device": eff.get("device"), "notes": eff.get("notes") or [],
            "breakdown": dict(eff.get("breakdown_ms") or {}), "totals": {k: eff.get(k) for k in LATENCY_KEYS}}


def _point(directory: Path, row: Row, ref_row: Row, ref_errors: dict[str, Any], draws: int,
           seed: int) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    run_dir = run_dir_of(directory, row)
    dirs = (_recorded_dir(ref_row, run_dir_of(directory, ref_row)), _recorded_dir(row, run_dir))
    point: dict[str, Any] = {
        "id": str(row["id"]), "config_diff": config_diff(ref_row.get("config"), row.get("config"), dirs),
        "overrides": list(row.get("overrides") or []), "numbers": numbers(row), "latency": latency(row),
        "manifest": lookup(row, "data.splits.test.manifest"), "answers": {}, "error": None, "paired": None}
    try:
        answers = read_answers(run_dir)
        errors = set_errors(run_dir)
    except SweepDirError as err:  # one point without answers still has its config and numbers to show
        point["error"] = str(err)
        return point, {}
    if ref_errors.get(""):
        point["paired"] = point_line(row, ref_row, ref_errors, errors, draws, seed)
    by_split = {SPLIT_OF[p]: e for p, e in errors.items()}
    for split, rows in answers.items():
        for a in rows:
            e, w = by_split.get(split, {}).get(str(a["id"]), (None, None))
            point["answers"][f"{split}:{a['id']}"] = [a.get("prediction"), e, w]
    return point, answers


def review_data(directory: Path, settings: ReportSettings, reference: str | None = None, draws: int = 10000,
                seed: int = 0, audio_mb: float = AUDIO_MB) -> dict[str, Any]:
    """Everything review.html shows, from a sweep dir (or a dir of Hydra runs) and its report settings."""
    if audio_mb < 0:
        raise ValueError(f"--audio-mb must be >= 0 (0: no audio in the page), got {audio_mb:g}")
    rows = load_rows(directory)
    try:
        ref_row = pick_reference(rows, reference)
    except SweepDirError as err:
        raise ReviewError(f"{directory}: {err}") from None
    check_objectives(rows, settings.objectives)
    pairs = frontier_pairs(rows, settings.objectives, settings.accuracy, settings.cost)
    data = html_data(rows, pairs, sweep_name(directory))
    ref_dir = run_dir_of(directory, ref_row)
    read_answers(ref_dir)  # the reference's answers are every clip's baseline: missing is an error, now
    ref_errors = set_errors(ref_dir)
    points: dict[str, Any] = {}
    clips: dict[str, dict[str, Any]] = {}
    for row in sorted((r for r in rows if is_ok(r)), key=lambda r: str(r["id"]) != str(ref_row["id"])):
        point, answers = _point(directory, row, ref_row, ref_errors, draws, seed)
        points[point["id"]] = point
        for split, answered in answers.items():  # the reference's clips first, in its order
            for a in answered:
                key = f"{split}:{a['id']}"
                clips.setdefault(key, {"key": key, "split": split, "id": str(a["id"]), "task": a.get("task"),
                                       "references": list(a.get("references") or [])})
    paths, notes = audio_paths(ref_row)
    audio, no_audio = embed_audio(list(clips.values()), paths, int(audio_mb * 1e6))
    ref_manifest = points[str(ref_row["id"])]["manifest"]
    for point in points.values():
        if point["manifest"] and ref_manifest and point["manifest"] != ref_manifest:
            point["error"] = (f"answered another test manifest ({point['manifest']}) than the reference "
                              f"({ref_manifest}): clips are paired by id")
    if no_audio:
        reasons: dict[str, int] = {}
        for why in no_audio.values():
            reasons[why] = reasons.get(why, 0) + 1
        shown = [f"{n} x {why}" for why, n in reasons.items()]
        log.warning("review: %d of %d clips have no audio player (the page says why for each): %s%s", len(no_audio),
                    len(clips), "; ".join(shown[:3]), f"; and {len(shown) - 3} other reasons" if len(shown) > 3 else "")
    data.update(reference=str(ref_row["id"]), points=points, clips=list(clips.values()), audio=audio,
                no_audio=no_audio, audio_notes=notes, audio_mb=audio_mb, directory=str(Path(directory).resolve()))
    return data


def render(data: Mapping[str, Any]) -> str:
    from plotly.offline import get_plotlyjs

    return (_HTML.replace("__TITLE__", html.escape(f"review: {data.get('title')}"))
            .replace("__PLOTLY__", get_plotlyjs()).replace("__DATA__", script_json(data)))


def write_review(directory: Path, settings: ReportSettings, out: Path | None = None, reference: str | None = None,
                 audio_mb: float = AUDIO_MB) -> Path:
    """Write the review page (default DIR/review.html); returns its path."""
    if not Path(directory).is_dir():
        raise ReviewError(f"{directory} is not a directory (give a sweep dir, e.g. multirun/sweeps/<name>)")
    data = review_data(Path(directory), settings, reference, audio_mb=audio_mb)
    out = Path(out) if out else Path(directory) / REVIEW_HTML
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render(data))
    log.info("review: %d points (reference %s), %d clips, %d with audio -> %s", len(data["points"]),
             data["reference"], len(data["clips"]), len(data["audio"]), out)
    return out


# --------------------------------------------------------------------------------------------- W&B rows

def clip_rows(directory: Path, row: Row, ref_row: Row | None) -> list[dict[str, Any]]:
    """One point's per-clip table as W&B logs it: split, clip id, task, reference text, this point's answer,
    the reference point's answer (None without a reference), per-clip WER (ASR clips) and the audio file (None
    where unknown)."""
    run_dir = run_dir_of(directory, row)
    mine = read_answers(run_dir)
    theirs = read_answers(run_dir_of(directory, ref_row)) if ref_row is not None else {}
    errors = clip_errors_by_split(run_dir)
    paths, _ = audio_paths(row)
    out = []
    for split, answered in mine.items():
        ref_answer = {str(a["id"]): a.get("prediction") for a in theirs.get(split, [])}
        for a in answered:
            cid = str(a["id"])
            e, w = errors.get(split, {}).get(cid, (None, None))
            out.append({"split": split, "id": cid, "task": a.get("task"),
                        "reference": " | ".join(a.get("references") or []), "answer": a.get("prediction"),
                        "reference_answer": ref_answer.get(cid), "wer": e / w if e is not None and w else None,
                        "audio": paths.get((split, cid))})
    return out


_HTML = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:16px;color:#222;background:#fff}
h1{font-size:19px;margin:0 0 4px} h2{font-size:15px;margin:18px 0 6px} h3{font-size:13px;margin:10px 0 4px}
.muted{color:#777} .controls{margin:6px 0;display:flex;gap:16px;flex-wrap:wrap;align-items:center}
select{font-size:13px;max-width:340px}
.top{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap} #plot{width:720px;height:440px;border:1px solid #ddd}
.lat{width:560px} #latency{width:560px;height:280px;border:1px solid #ddd}
.panels{display:flex;gap:14px;align-items:flex-start} .panel{flex:1;min-width:0;border:1px solid #ddd;padding:6px 10px}
.panel h2{margin:2px 0 6px;padding:3px 6px;color:#fff} .pA h2{background:#1f77b4} .pB h2{background:#ff7f0e}
table{border-collapse:collapse;font-size:12px} td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums} code{font-size:11px}
th.cA{background:#1f77b4;color:#fff} th.cB{background:#ff7f0e;color:#fff} th.cR{background:#444;color:#fff}
.better{color:#2ca02c;font-weight:600} .worse{color:#d62728;font-weight:600} .warn{color:#b35900}
#clips audio{height:28px;width:190px} #clips td.ans{max-width:300px}
</style>
<script>__PLOTLY__</script>
</head><body>
<h1 id="title"></h1><div id="summary" class="muted"></div>
<details id="failed" style="display:none"><summary></summary><table id="failures"></table></details>
<div class="controls">
 <label>accuracy (y) <select id="acc"></select></label>
 <label>cost (x) <select id="cost"></select></label>
 <label><input type="checkbox" id="logx"> log x</label>
 <label>A <select id="selA"></select></label>
 <label>B <select id="selB"></select></label>
 <span class="muted">click a point: A; shift-click: B</span>
</div>
<div class="top"><div id="plot"></div><div class="lat"><h3>Latency (ms, median; decode is per output token)</h3>
<div id="latency"></div><div id="latnote" class="muted"></div><table id="lattotals"></table></div></div>
<div class="panels"><div class="panel pA" id="panelA"></div><div class="panel pB" id="panelB"></div></div>
<h2>Clips <span id="clipnote" class="muted"></span></h2>
<div class="controls">
 <label>set <select id="split"></select></label>
 <label>sort <select id="sort"><option value="order">test-set order</option>
  <option value="A">A's clip WER, highest first</option><option value="AB">A's minus B's clip WER, largest first</option></select></label>
 <label><input type="checkbox" id="differ"> only clips where the answers shown differ</label>
</div>
<div id="audionote" class="muted"></div>
<table id="clips"></table>
<script>
const DATA = __DATA__;
const $ = id => document.getElementById(id);
const REF = DATA.reference, FRONT = "#d62728", CA = "#1f77b4", CB = "#ff7f0e";
const S = {A: null, B: null};
function esc(s){return String(s===null||s===undefined?"":s).replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));}
function fmt(v){if(v===null||v===undefined)return "\u2013";const a=Math.abs(v);if(a!==0&&(a>=1e5||a<1e-3))return v.toExponential(3);return (+v.toPrecision(4)).toString();}
function sgn(v){return v===null||v===undefined?"\u2013":(v>0?"+":"")+fmt(v);}
function d4(v){return v===null||v===undefined?"\u2013":(v>0?"+":v<0?"\u2212":"")+Math.abs(v).toFixed(4);}
function row(id){return DATA.rows.find(r=>r.id===id);}
function label(id){const r=row(id);return id+(id===REF?" (reference)":"")+(r?": "+r.label:"");}
function ok(){return DATA.rows.filter(r=>r.status==="ok");}
function fill(sel, axes){for(const a of axes){const o=document.createElement("option");o.value=a.key;o.textContent=a.label+" ("+a.direction+")";sel.appendChild(o);}}
function onFront(){const fr=DATA.frontiers[$("acc").value+"|"+$("cost").value]||{};const s=new Set();for(const g in fr)for(const id of fr[g])s.add(id);return s;}
function axis(list,key){return list.find(a=>a.key===key);}

// ---- frontier plot
function drawPlot(){
 const acc=axis(DATA.accuracy,$("acc").value), cost=axis(DATA.cost,$("cost").value), front=onFront();
 const pts=ok().filter(r=>r.values[acc.key]!=null&&r.values[cost.key]!=null);
 const trace=(rs,extra)=>Object.assign({x:rs.map(r=>r.values[cost.key]),y:rs.map(r=>r.values[acc.key]),customdata:rs.map(r=>r.id),
   text:rs.map(r=>esc(r.id)+"<br>"+esc(r.label)),hovertemplate:"%{text}<br>"+esc(cost.label)+" %{x}<br>"+esc(acc.label)+" %{y}<extra></extra>",type:"scatter"},extra);
 const fr=pts.filter(r=>front.has(r.id)).sort((a,b)=>a.values[cost.key]-b.values[cost.key]);
 const mark=(id,name,color,symbol)=>{const r=pts.find(p=>p.id===id);return r?[trace([r],{name:name,mode:"markers+text",textposition:"top center",
   texttemplate:name.split(":")[0],marker:{size:20,color:"rgba(0,0,0,0)",symbol:symbol,line:{color:color,width:3}},textfont:{color:color,size:13}})]:[];};
 const traces=[trace(pts,{name:"points",mode:"markers",marker:{size:9,color:"#7f7f7f",opacity:0.7}}),
  trace(fr,{name:"frontier",mode:"lines+markers",line:{shape:"hv",color:FRONT,width:2},marker:{size:11,color:FRONT,line:{color:"#000",width:1}}}),
  ...mark(REF,"R: reference","#222","star-open"),...mark(S.A,"A: "+S.A,CA,"circle-open"),...mark(S.B,"B: "+S.B,CB,"circle-open")];
 const layout={margin:{l:60,r:10,t:10,b:50},xaxis:{title:{text:cost.label+" ("+cost.direction+")"},type:$("logx").checked?"log":"linear"},
  yaxis:{title:{text:acc.label+" ("+acc.direction+")"}},hovermode:"closest",legend:{orientation:"h",y:-0.2},showlegend:false};
 Plotly.react("plot",traces,layout,{displaylogo:false,responsive:true});
}

// ---- A / B panels
function pairedCell(p,prefix){if(!p||p[prefix+"wer_delta"]==null)return "\u2013";const v=p[prefix+"verdict"];
 return d4(p[prefix+"wer_delta"])+" ["+d4(p[prefix+"wer_delta_lo"])+", "+d4(p[prefix+"wer_delta_hi"])+"] <span class='"+(v==="better"?"better":v==="worse"?"worse":"")+"'>"+esc(v)+"</span>";}
function panel(which){
 const el=$("panel"+which), id=S[which];
 if(!id){el.innerHTML="<h2>"+which+"</h2><div class='muted'>"+(which==="A"?"Click a point on the frontier plot.":"Shift-click a second point to compare it with A.")+"</div>";return;}
 const p=DATA.points[id], ref=DATA.points[REF], r=row(id);
 let h="<h2>"+which+": "+esc(id)+"</h2><div><code>"+esc(r.label)+"</code>"+(onFront().has(id)?" \u2014 <b style='color:"+FRONT+"'>on the frontier</b>":"")+"</div>";
 if(p.error)h+="<div class='warn'>"+esc(p.error)+"</div>";
 h+="<h3>WER against the reference ("+esc(REF)+"), paired 95 % interval</h3>";
 if(id===REF)h+="<div class='muted'>this is the reference point</div>";
 else{h+="<table><tr><th>set</th><th>clips</th><th>WER</th><th>\u0394 [95 % interval]</th></tr>";
  for(const [prefix,name] of [["","test"],["real_","real speech"]]){const q=p.paired;if(!q||!(prefix+"clips" in q))continue;
   h+="<tr><td>"+name+"</td><td class='num'>"+q[prefix+"clips"]+"</td><td class='num'>"+fmt(q[prefix+"wer"])+"</td><td>"+pairedCell(q,prefix)+"</td></tr>";}
  h+="</table>";}
 const keys=[...new Set([...DATA.accuracy,...DATA.cost].map(a=>a.key))];
 const rest=Object.keys(p.numbers).filter(k=>!keys.includes(k));
 const numRow=k=>{const a=p.numbers[k],b=ref?ref.numbers[k]:null;return "<tr><td>"+esc(k)+"</td><td class='num'>"+fmt(a)+"</td><td class='num'>"+fmt(b)+"</td><td class='num'>"+(a!=null&&b!=null?sgn(a-b):"\u2013")+"</td></tr>";};
 const head="<tr><th>key</th><th>"+esc(id)+"</th><th>reference</th><th>\u0394</th></tr>";
 h+="<h3>Metrics</h3><table>"+head+keys.map(numRow).join("")+"</table>";
 h+="<details><summary>all "+rest.length+" other numbers</summary><table>"+head+rest.map(numRow).join("")+"</table></details>";
 h+="<h3>Config diff from the reference</h3>";
 if(id===REF)h+="<div class='muted'>\u2013</div>";
 else if(!p.config_diff.length)h+="<div class='muted'>same config</div>";
 else h+="<table><tr><th>key</th><th>reference</th><th>"+esc(id)+"</th></tr>"+p.config_diff.map(d=>"<tr><td><code>"+esc(d[0])+"</code></td><td><code>"+esc(d[1])+"</code></td><td><code>"+esc(d[2])+"</code></td></tr>").join("")+"</table>";
 h+="<details><summary>overrides</summary><code>"+p.overrides.map(esc).join("<br>")+"</code></details>";
 el.innerHTML=h;
}

// ---- latency
function shown(){return [[REF,"reference","#444"],[S.A,"A","#1f77b4"],[S.B,"B","#ff7f0e"]].filter(x=>x[0]&&DATA.points[x[0]]&&!(x[1]!=="reference"&&x[0]===REF));}
function drawLatency(){
 const cols=shown(), regions=[...new Set(cols.flatMap(([id])=>Object.keys(DATA.points[id].latency.breakdown)))];
 const names=regions.map(k=>k==="decode"?"decode / token":k);
 const traces=cols.map(([id,who,color])=>({type:"bar",name:who+": "+id,x:names,y:regions.map(k=>DATA.points[id].latency.breakdown[k]),marker:{color:color},
  hovertemplate:"%{x}: %{y:.3g} ms<extra>"+esc(who+": "+id)+"</extra>"}));
 Plotly.react("latency",traces,{barmode:"group",margin:{l:50,r:10,t:10,b:60},yaxis:{title:{text:"ms"}},legend:{orientation:"h",y:-0.25}},{displaylogo:false});
 const missing=cols.filter(([id])=>regions.every(k=>DATA.points[id].latency.breakdown[k]==null)).map(([id,who])=>who+" "+id+" (measure.mode="+DATA.points[id].latency.mode+")");
 $("latnote").textContent=(missing.length?"not measured: "+missing.join(", ")+". ":"")+"Medians on the protocol clip: features (log-mel, outside TTFT), then encoder + connector + prefill = time to first token; decode = one output token. Device: "+(DATA.points[REF].latency.device||"\u2013")+".";
 const keys=Object.keys(DATA.points[REF].latency.totals);
 $("lattotals").innerHTML="<tr><th></th>"+cols.map(([id,who])=>"<th>"+esc(who+": "+id)+"</th>").join("")+"</tr>"+keys.map(k=>"<tr><td>"+k+"</td>"+cols.map(([id])=>"<td class='num'>"+fmt(DATA.points[id].latency.totals[k])+"</td>").join("")+"</tr>").join("");
}

// ---- clips
const AUDIO = new Map();
function player(c){if(!DATA.audio[c.key])return "<span class='muted' title='"+esc(DATA.no_audio[c.key]||"")+"'>no audio</span>";return "<span data-audio='"+esc(c.key)+"'></span>";}
function werCell(a){if(!a||a[1]==null)return "<td class='num'>\u2013</td>";const w=a[2]?a[1]/a[2]:0;const bg=w===0?"#e8f5e9":w<0.5?"#fff8e1":"#fdecea";
 return "<td class='num' style='background:"+bg+"'>"+fmt(w)+" <span class='muted'>("+a[1]+"/"+a[2]+")</span></td>";}
function drawClips(){
 const split=$("split").value, cols=[[REF,"R","reference point"]];
 if(S.A&&S.A!==REF)cols.push([S.A,"A","A"]); if(S.B&&S.B!==REF&&S.B!==S.A)cols.push([S.B,"B","B"]);
 let clips=DATA.clips.filter(c=>c.split===split);
 const ans=(id,c)=>DATA.points[id].answers[c.key];
 if($("differ").checked)clips=clips.filter(c=>new Set(cols.map(([id])=>(ans(id,c)||[null])[0])).size>1);
 const w=(id,c)=>{const a=ans(id,c);return a&&a[1]!=null&&a[2]?a[1]/a[2]:-Infinity;};
 if($("sort").value==="A"&&S.A)clips=[...clips].sort((x,y)=>w(S.A,y)-w(S.A,x));
 if($("sort").value==="AB"&&S.A&&S.B)clips=[...clips].sort((x,y)=>(w(S.A,y)-w(S.B,y))-(w(S.A,x)-w(S.B,x)));
 let h="<tr><th>#</th><th>clip</th><th>audio</th><th>reference text</th>"+cols.map(([id,c,who])=>"<th class='c"+c+"'>"+esc(who)+" "+esc(id)+" answer</th><th class='c"+c+"'>WER</th>").join("")+"</tr>";
 clips.forEach((c,i)=>{h+="<tr data-clip='"+esc(c.key)+"'><td class='num'>"+(i+1)+"</td><td><code>"+esc(c.id)+"</code><br><span class='muted'>"+esc(c.task)+"</span></td><td>"+player(c)+"</td><td title='"+esc(c.references.join(" | "))+"'>"+esc(c.references[0])+(c.references.length>1?" <span class='muted'>(+"+(c.references.length-1)+")</span>":"")+"</td>";
  for(const [id,k] of cols){const a=ans(id,c);h+="<td class='ans a"+k+"'>"+(!a?"<span class='muted'>not answered</span>":a[0]?esc(a[0]):"<span class='muted'>(empty answer)</span>")+"</td>"+werCell(a);}
  h+="</tr>";});
 $("clips").innerHTML=h;
 for(const span of document.querySelectorAll("#clips [data-audio]")){const k=span.getAttribute("data-audio");
  if(!AUDIO.has(k)){const a=document.createElement("audio");a.controls=true;a.preload="none";a.src=DATA.audio[k];AUDIO.set(k,a);}span.appendChild(AUDIO.get(k));}
 $("clipnote").textContent="("+clips.length+" shown; "+cols.map(([id,c,who])=>who+" = "+id).join(", ")+(S.A?"":"; click a point to add its answers")+")";
}

// ---- selection
function select(which,id){S[which]=id||null;if(which==="A"&&S.B===S.A&&S.A)S.B=null;
 $("selA").value=S.A||"";$("selB").value=S.B||"";
 history.replaceState(null,"","#"+(S.A?"a="+encodeURIComponent(S.A):"")+(S.B?"&b="+encodeURIComponent(S.B):""));
 drawPlot();panel("A");panel("B");drawLatency();drawClips();}
function init(){
 $("title").textContent="review: "+DATA.title;
 const nok=ok().length;
 $("summary").textContent=nok+" finished points, "+(DATA.rows.length-nok)+" failed; reference "+REF+" (the sweep's first point unless --reference names another). "+DATA.directory;
 const bad=DATA.rows.filter(r=>r.status!=="ok");
 if(bad.length){$("failed").style.display="";$("failed").querySelector("summary").textContent=bad.length+" failed point(s): not plotted";
  $("failures").innerHTML="<tr><th>id</th><th>error</th><th>config</th></tr>"+bad.map(r=>"<tr><td>"+esc(r.id)+"</td><td>"+esc((r.error||"").slice(0,600))+"</td><td><code>"+esc(r.label)+"</code></td></tr>").join("");}
 fill($("acc"),DATA.accuracy); fill($("cost"),DATA.cost);
 if(DATA.pairs.length){const [a,c]=DATA.pairs[0].split("|");$("acc").value=a;$("cost").value=c;}
 for(const s of [$("selA"),$("selB")]){s.innerHTML="<option value=''>(none)</option>"+ok().map(r=>"<option value='"+esc(r.id)+"'>"+esc(label(r.id))+"</option>").join("");}
 const splits=[...new Set(DATA.clips.map(c=>c.split))];
 $("split").innerHTML=splits.map(s=>"<option value='"+s+"'>"+(s==="real"?"real speech":s)+" ("+DATA.clips.filter(c=>c.split===s).length+")</option>").join("");
 const cut=Object.keys(DATA.no_audio).length;
 $("audionote").textContent=Object.keys(DATA.audio).length+" of "+DATA.clips.length+" clips' audio embedded (Ogg Vorbis, 16 kHz, budget "+DATA.audio_mb+" MB)"+(cut?"; "+cut+" without a player (hover \u201cno audio\u201d for why)":"")+(DATA.audio_notes.length?". "+DATA.audio_notes.join(". "):"");
 for(const id of ["acc","cost"])$(id).addEventListener("change",()=>{if(!DATA.frontiers[$("acc").value+"|"+$("cost").value]){const other=id==="acc"?"cost":"acc",want=$(id).value;
  const p=DATA.pairs.find(k=>id==="acc"?k.startsWith(want+"|"):k.endsWith("|"+want));if(p)$(other).value=id==="acc"?p.split("|")[1]:p.split("|")[0];}drawPlot();});
 $("logx").addEventListener("change",drawPlot);
 $("selA").addEventListener("change",()=>select("A",$("selA").value)); $("selB").addEventListener("change",()=>select("B",$("selB").value));
 for(const id of ["split","sort","differ"])$(id).addEventListener("change",drawClips);
 const h=new URLSearchParams(location.hash.slice(1));
 S.A=DATA.points[h.get("a")]?h.get("a"):null; S.B=DATA.points[h.get("b")]?h.get("b"):null;
 select("A",S.A);
 $("plot").on("plotly_click",ev=>{const p=ev.points&&ev.points[0];if(!p||p.customdata==null)return;select(ev.event&&ev.event.shiftKey?"B":"A",p.customdata);});
}
init();
</script></body></html>
"""
