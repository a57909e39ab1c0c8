"""The main job end to end on the procedural domain-shift benchmark (the README's ``./vlt demo``).

Every stage is a real command of the package, run as its own process, exactly as a user would chain them:

1. ``vlt_training.cli.generate``        render the benchmark (source domain + fog/night/rain/snow/real_style)
2. ``vlt_training.cli.train``           train a small VLTSeg on the source domain (CPU)
3. ``vlt_training.cli.evaluate``        mIoU per condition with the training-side evaluator
4. ``vlt_training.cli.export``          self-verifying ONNX export with metadata
5. ``vlt_perception.cli.dataset_to_bag``  one rosbag2 (MCAP) per condition, with ground truth
6. ``vlt_perception.cli.bag_eval``    offline evaluation of the bags through ONNX Runtime, report with figures
7. VLTMT (when ``--detection``): the multi-task model, VLTSeg's Mask2Former and VLTDet's Faster R-CNN on one
   tower. The cheap route: step 2's VLTSeg is copied in (``model.init_from``) and frozen, and only the detection
   head trains on its tower, so its segmentation half is exactly step 2's VLTSeg. mIoU and COCO AP per condition
   come from that one model (one backbone pass per image), which is exported as one ONNX graph carrying both
   contracts (parity checked for both outputs)
8. the bags replayed lock-step through the ROS 2 graph: ONE multitask_node running step 7's graph publishes the
   labels and the detections of every frame, and evaluator_node scores both (online mIoU and AP50 per condition);
   without step 7, segmentation_node with step 4's graph

It ends with a per-condition table (mIoU, rPD, ECE, online mIoU and AP50, latency) and a report folder
``<workdir>/report``.
ROS graph stages must run inside a private network namespace (``./vlt demo`` does that).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vlt_perception.atomic import atomic_write_text
from vlt_perception.resources import share_dir, source_root

# Training configs from the package's data: the source checkout's config/train, else share/vlt_training/config.
TRAIN_CONFIGS = share_dir("vlt_training") / "config" / "train"
SEG_CONFIG = TRAIN_CONFIGS / "tiny_cpu.yaml"
DET_CONFIG = TRAIN_CONFIGS / "tiny_det_cpu.yaml"
MT_CONFIG = TRAIN_CONFIGS / "tiny_mt_cpu.yaml"
# The frozen-tower route: the VLTSeg run's tensors in VLTMT, frozen; only the detection head (and its detail stem)
# trains, on the detection losses alone.
FROZEN_TOWER = ["model.init_prefixes=[backbone.,neck.,pixel_text.,pixel_decoder.,predictor.]",
                "model.overrides.seg_loss_weight=0.0", "model.overrides.freeze=[backbone,neck,segmentation]"]
CONDITIONS = ("fog", "night", "rain", "snow", "real_style")
# The project's own CLIP-style tower (vlt_training/pretrained/vlt-tiny-clip, made by `pretrain`).
PRETRAINED = "vlt-pretrained:vlt-tiny-clip"


def pretrained_override(value: str) -> str:
    """The ``model.pretrained=`` override for ``--pretrained`` (``none`` = random weights)."""
    return "model.pretrained=null" if value.strip().lower() in ("none", "null", "") else f"model.pretrained={value}"


@dataclass
class DemoSize:
    """How big a run is: the default aims at under 15 minutes on an idle 2-core CPU (measured 9.8 min on
    2026-12-03: source mIoU 0.464, VLTDet source AP50 0.522 on its 64 scenes; slower VMs ran every stage up to
    1.5x slower; docs/results.md)."""

    num_train: int
    num_val: int
    height: int
    width: int
    iters: int
    det_iters: int
    # VLTDet is scored on its own scenes (each under every condition): AP on 8 scenes swings by 10 points from VM
    # to VM for the same detector, and scoring 64 takes seconds (segmentation also replays its scenes as bags)
    det_num_val: int = 64


DEFAULT = DemoSize(num_train=400, num_val=8, height=128, width=256, iters=1000, det_iters=1200, det_num_val=64)
QUICK = DemoSize(num_train=6, num_val=2, height=64, width=128, iters=20, det_iters=10, det_num_val=2)


class StageError(RuntimeError):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlt_training.cli.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="everything goes here (wiped first)")
    p.add_argument("--quick", action="store_true", help="a miniature run (tiny images, a few steps) for smoke tests")
    p.add_argument("--iters", type=int, help="segmentation training iterations")
    p.add_argument("--det-iters", type=int,
                   help="detection training iterations (default: the default size's, scaled like --iters)")
    p.add_argument("--num-train", type=int, help="source-domain training images")
    p.add_argument("--num-val", type=int, help="validation scenes (each also rendered under every condition)")
    p.add_argument("--det-num-val", type=int,
                   help="VLTDet's validation scenes, rendered apart from the segmentation ones (each under every "
                        "condition)")
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--detection", action=argparse.BooleanOptionalAction, default=None,
                   help="also train the multi-task model's detection head on the VLTSeg tower and evaluate both "
                        "tasks from it (default: on when its config exists)")
    p.add_argument("--pretrained", default=PRETRAINED,
                   help="tower VLTSeg fine-tunes from (model.pretrained): default the project's own "
                        "vision-language tower shipped in the package (docs/pretraining.md); 'none' = random init. "
                        "the multi-task model then starts from the trained VLTSeg (model.init_from)")
    p.add_argument("--online", action=argparse.BooleanOptionalAction, default=True,
                   help="replay the bags through the ROS 2 segmentation node (needs rclpy)")
    return p


def size_from_args(args: argparse.Namespace) -> DemoSize:
    base = QUICK if args.quick else DEFAULT
    iters = args.iters or base.iters
    return DemoSize(
        num_train=args.num_train or base.num_train, num_val=args.num_val or base.num_val,
        height=args.height or base.height, width=args.width or base.width, iters=iters,
        det_iters=args.det_iters or max(10, iters * base.det_iters // base.iters),  # scaled like --iters
        det_num_val=args.det_num_val or base.det_num_val,
    )


def run_stage(name: str, args: list[str], log_dir: Path, echo: bool = True) -> float:
    """Run ``python <args>``; its output goes to ``log_dir/<name>.log`` (and the terminal). Returns seconds."""
    log_path = log_dir / f"{name}.log"
    print(f"\n=== {name}: {' '.join(args)}", flush=True)
    started = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=_child_env())
        for line in proc.stdout:
            log.write(line)
            if echo:
                print(f"  {line}", end="", flush=True)
        proc.wait()
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise StageError(f"stage {name} failed ({proc.returncode}); log: {log_path}")
    print(f"=== {name}: done in {elapsed:.1f} s", flush=True)
    return elapsed


def _child_env() -> dict[str, str]:
    """The stages import the same packages as this process: from a source checkout, put it on their path."""
    env = dict(os.environ)
    root = source_root()
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --- online replay through the ROS 2 graph -------------------------------------------------------------------
def ros_arguments(node) -> list[str]:
    """``launch_config.NodeLaunch`` -> ``python -m <module> --ros-args ...`` (what ``ros2 launch`` would start)."""
    args = ["-m", f"vlt_perception.nodes.{node.executable}", "--ros-args", "-r", f"__node:={node.name}"]
    if node.namespace:
        args += ["-r", f"__ns:=/{node.namespace.strip('/')}"]
    for entry in node.parameters:
        if isinstance(entry, dict):
            for key, value in entry.items():
                args += ["-p", f"{key}:={_param_text(value)}"]
        else:
            args += ["--params-file", str(entry)]
    for source, target in node.remappings:
        args += ["-r", f"{source}:={target}"]
    return args


def _param_text(value) -> str:
    """A parameter value as the YAML text ``-p name:=value`` expects (strings quoted so they stay strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # strings and lists: JSON is valid YAML flow syntax


def replay_online(bag: Path, model: Path, out: Path, log_dir: Path, timeout_s: float = 300.0) -> dict:
    """Play one bag lock-step through segmentation_node and score it with evaluator_node; returns report.json."""
    from vlt_perception.bag.replay import replay_eval_nodes

    seg, evaluator, player = replay_eval_nodes(bag=str(bag), model=str(model), out=str(out), mode="lockstep")
    return _run_replay([seg, evaluator, player], bag, out, log_dir, timeout_s)


# The multi-task replay's one camera: its topics are ~/<camera>/out/... of the multitask_node.
REPLAY_CAMERA = "camera"


def replay_online_multitask(bag: Path, model: Path, out: Path, log_dir: Path, thing_classes: list[str],
                            timeout_s: float = 300.0) -> dict:
    """Play one bag lock-step through ONE multitask_node running the multi-task graph, which publishes the labels
    and the Detection2DArray of every frame; evaluator_node scores both (mIoU and COCO AP); returns report.json."""
    from vlt_perception.bag.replay import replay_eval_nodes
    from vlt_perception.bag.topics import BagTopics
    from vlt_perception.launch_config import multitask_launch

    seg, evaluator, player = replay_eval_nodes(bag=str(bag), model=str(model), out=str(out), mode="lockstep")
    node = multitask_launch([REPLAY_CAMERA], str(model), BagTopics().image, False, "", "", {}, "", dict(seg.env))
    node.exit_fails_launch = "any"
    # detections down to the offline evaluation's score threshold, so both evaluations rank the same boxes
    node.parameters.append({"score_threshold": 0.05})
    node.parameters.append({"publish_confidence": True})  # calibration (ECE) online, as replay_eval_nodes does
    labels = f"/{node.name}/{REPLAY_CAMERA}/out/labels"
    confidence = f"/{node.name}/{REPLAY_CAMERA}/out/confidence"
    detections = f"/{node.name}/{REPLAY_CAMERA}/out/detections"
    ours = {player.parameters[0]["result_topic"]: labels, evaluator.parameters[0]["confidence_topic"]: confidence}
    player.parameters[0].update(result_topic=labels, wait_topics=[
        ours.get(topic, topic) for topic in player.parameters[0]["wait_topics"]])
    evaluator.parameters[0].update(labels_topic=labels, confidence_topic=confidence, detections_topic=detections,
                                   gt_detections_topic=BagTopics().detections, thing_classes=list(thing_classes))
    return _run_replay([node, evaluator, player], bag, out, log_dir, timeout_s)


def _run_replay(nodes: list, bag: Path, out: Path, log_dir: Path, timeout_s: float) -> dict:
    """Start ``nodes`` (perception node, evaluator, player) as processes; wait for the evaluator's report."""
    procs = []
    try:
        for node in nodes:
            log = open(log_dir / f"online_{bag.name}_{node.name}.log", "w")  # noqa: SIM115 - closed below
            env = {**_child_env(), **node.env}  # what the launch file gives the node (large-image profile)
            procs.append((subprocess.Popen([sys.executable, *ros_arguments(node)], env=env,
                                           stdout=log, stderr=subprocess.STDOUT), log))
        deadline = time.monotonic() + timeout_s
        for proc, _ in procs[1:]:  # the player finishes the bag, then the evaluator writes its report and exits
            remaining = max(1.0, deadline - time.monotonic())
            if proc.wait(timeout=remaining) != 0:
                raise StageError(f"online replay of {bag.name}: a node failed; logs in {log_dir}")
    except subprocess.TimeoutExpired as exc:
        raise StageError(f"online replay of {bag.name} timed out; logs in {log_dir}") from exc
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.send_signal(2)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()
    return json.loads((out / "report.json").read_text())


# --- the table -----------------------------------------------------------------------------------------------
def _miou(entry: dict | None) -> float:
    try:
        return float(entry["segmentation"]["mIoU"])
    except (KeyError, TypeError, ValueError):
        return math.nan


def _ap50(entry: dict | None) -> float:
    try:
        return float(entry["detection"]["AP50"])
    except (KeyError, TypeError, ValueError):
        return math.nan


def _p50(entry: dict | None) -> float:
    try:
        return float(entry["latency_ms"]["p50"])
    except (KeyError, TypeError, ValueError):
        return math.nan


def summary_rows(offline: dict, online: dict[str, dict], training_eval: dict | None) -> list[dict]:
    """One row per condition (source first): offline and online mIoU, retention vs the source (the table shows it
    as rPD = 100 x retention), the offline and online ECE of the per-pixel confidence, latencies.

    ``offline`` is bag_eval's report.json (the reference bag is the source domain), ``online`` maps bag names
    (``source``, ``fog`` ...) to evaluator_node reports, ``training_eval`` is the evaluate CLI's JSON.
    """
    reference = offline.get("bags", {}).get(offline.get("reference") or "", {})
    source_miou = _miou(reference)
    entries = {"source": reference, **offline.get("conditions", {})}
    rows = []
    for name, entry in entries.items():
        miou = _miou(entry)
        live = online.get(name, {})
        rows.append({
            "condition": name,
            "mIoU": miou,
            "retention": miou / source_miou if source_miou > 0 else math.nan,
            "ECE": _float((entry.get("calibration") or {}).get("ece")),
            "online_mIoU": _miou(live.get("overall")),
            "online_AP50": _ap50(live.get("overall")),  # the multitask_node's detections (n/a: segmentation only)
            "online_ECE": _float(((live.get("overall") or {}).get("calibration") or {}).get("ece")),
            "engine_ms_p50": _p50(entry),
            "end_to_end_ms_p50": _p50(live.get("overall")),
            "dropped": sum(b.get("counts", {}).get("dropped_frames", 0) for b in live.get("bags", {}).values())
            if live else None,
            "train_eval_mIoU": _training_miou(training_eval, name),
        })
    return rows


def _training_miou(training_eval: dict | None, condition: str) -> float:
    datasets = (training_eval or {}).get("datasets", {})
    if condition == "source":
        return _float(datasets.get(training_eval.get("source"), {}).get("overall", {}).get("mIoU"))
    for dataset in datasets.values():
        if condition in dataset.get("conditions", {}):
            return _float(dataset["conditions"][condition].get("mIoU"))
    return math.nan


def _float(value) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def format_table(rows: list[dict]) -> str:
    def pct(v):
        return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:6.1f}"

    def ms(v):
        return "    n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:7.1f}"

    lines = ["condition    mIoU     rPD     ECE  online mIoU  online AP50  train-eval mIoU  engine ms p50  "
             "end-to-end ms p50  dropped", "-" * 120]
    for r in rows:
        lines.append(f"{r['condition']:<11} {pct(r['mIoU'])}  {pct(r['retention'])}  {pct(r.get('ECE'))}"
                     f"       {pct(r['online_mIoU'])}       {pct(r.get('online_AP50'))}"
                     f"           {pct(r['train_eval_mIoU'])}        {ms(r['engine_ms_p50'])}"
                     f"            {ms(r['end_to_end_ms_p50'])}  {r['dropped'] if r['dropped'] is not None else 'n/a'}")
    return "\n".join(lines)


def format_detection(report: dict) -> str:
    """One line per dataset condition: mAP, AP50 and the per-class AP (IoU .50:.95) from the evaluate CLI's
    detection JSON, then (where the report has it) the per-class AP50 the same way; ``-`` for a class without
    ground truth in that condition."""
    entries = [("source" if condition == "clear" else condition, entry)
               for dataset in report.get("datasets", {}).values()
               for condition, entry in dataset.get("conditions", {}).items()]
    classes = [name for name in dict.fromkeys(n for _, e in entries for n in (e.get("per_class_AP") or {}))
               if any((e.get("per_class_AP") or {}).get(name) is not None for _, e in entries)]
    short = "".join(f"{name[:10]:>11}" for name in classes)

    def cells(per_class: dict) -> str:
        return "".join(f"{'-' if per_class.get(c) is None else f'{100 * per_class[c]:.1f}':>11}" for c in classes)

    lines = ["condition    mAP    AP50  " + short]
    for name, entry in entries:
        lines.append(f"{name:<11} {100 * (entry.get('mAP') or 0):5.1f}   {100 * (entry.get('AP50') or 0):5.1f}  "
                     f"{cells(entry.get('per_class_AP') or {})}")
    if any("per_class_AP50" in entry for _, entry in entries):
        lines.append("AP50 per class       " + short)
        lines.extend(f"{name:<20} {cells(entry.get('per_class_AP50') or {})}" for name, entry in entries)
    return "\n".join(lines)


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


# --- main ----------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    size = size_from_args(args)
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    logs, report = work / "logs", work / "report"
    logs.mkdir(parents=True)
    report.mkdir()
    timings: dict[str, float] = {}
    started = time.monotonic()
    try:
        summary = _run(args, size, work, logs, report, timings)
    except StageError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    summary["timings_s"] = timings
    summary["total_s"] = time.monotonic() - started
    write_json(report / "summary.json", summary)
    print(f"\ntiny VLTSeg fine-tuned from: {args.pretrained}; the multi-task VLTMT's detection head trained on "
          "that VLTSeg's frozen tower")
    print(f"\n{format_table(summary['rows'])}")
    print(f"\nsource-domain mIoU on held-out images: {100 * summary['source_mIoU']:.1f} "
          f"({summary['size']['iters']} iterations; the README gives the measured default)")
    if summary.get("multitask"):
        print(f"\nVLTMT (tiny, one model, one backbone pass for both tasks; {summary['size']['det_num_val']} scenes "
              f"of its own per condition):\n{format_multitask(summary['multitask'])}")
        print(f"\nits detection head, COCO AP per class:\n{format_detection(summary['multitask'])}")
    print(f"total {summary['total_s'] / 60:.1f} min; report: {report}")
    return 0


def generate_args(out: Path, num_train: int, num_val: int, size: DemoSize, seed: int) -> list[str]:
    """The ``generate`` command rendering ``num_train`` source images and ``num_val`` scenes (under every
    condition) at the demo's image size."""
    return ["-m", "vlt_training.cli.generate", "--out", str(out), "--num-train", str(num_train),
            "--num-val", str(num_val), "--height", str(size.height), "--width", str(size.width), "--seed", str(seed)]


def _run(args, size: DemoSize, work: Path, logs: Path, report: Path, timings: dict) -> dict:
    data, run, model = work / "data", work / "run", work / "model.onnx"
    timings["generate"] = run_stage("generate", generate_args(data, size.num_train, size.num_val, size, args.seed),
                                    logs)
    crop = f"[{size.height},{size.width}]"
    timings["train"] = run_stage("train", [
        "-m", "vlt_training.cli.train", "--config", str(SEG_CONFIG), "--out", str(run), "--no-progress",
        f"data.root={data}", "data.synthetic.enabled=false", f"train.max_iters={size.iters}",
        f"train.checkpoint_interval={size.iters}", f"data.crop_size={crop}", f"eval.crop_size={crop}",
        # one loader process decodes and augments the next batch while the model trains: ~20% faster here
        f"train.seed={args.seed}", "train.num_workers=1", pretrained_override(args.pretrained)], logs)
    training_eval_path = report / "training_eval.json"
    timings["evaluate"] = run_stage("evaluate", [
        "-m", "vlt_training.cli.evaluate", "--checkpoint", str(run), "--out", str(training_eval_path),
        f"data.root={data}", "data.synthetic.enabled=false"], logs)
    timings["export"] = run_stage("export", [
        "-m", "vlt_training.cli.export", "--checkpoint", str(run), "--format", "onnx", "--out", str(model)], logs)

    bags = work / "bags"
    bags.mkdir()
    started = time.monotonic()
    run_stage("bag_source", ["-m", "vlt_perception.cli.dataset_to_bag", "--dataset", "cityscapes",
                             "--root", str(data / "cityscapes"), "--split", "val", "--out", str(bags / "source")],
              logs, echo=False)
    for condition in CONDITIONS:
        run_stage(f"bag_{condition}", [
            "-m", "vlt_perception.cli.dataset_to_bag", "--dataset", "acdc", "--root", str(data / "acdc"),
            "--split", "val", "--conditions", condition, "--out", str(bags / condition)], logs, echo=False)
    timings["bags"] = time.monotonic() - started

    offline_dir = report / "offline"
    eval_args = ["-m", "vlt_perception.cli.bag_eval", "--model", str(model), "--reference", str(bags / "source"),
                 "--out", str(offline_dir)]
    for condition in CONDITIONS:
        eval_args += ["--bag", str(bags / condition)]
    timings["bag_eval"] = run_stage("bag_eval", eval_args, logs)
    offline = json.loads((offline_dir / "report.json").read_text())

    multitask = _multitask(args, size, work, data, logs, report, timings)
    online: dict[str, dict] = {}
    if args.online:
        started = time.monotonic()
        mt_model = work / "multitask.onnx"
        for name in ("source", *CONDITIONS):
            if multitask is not None:  # one node publishes both tasks; its segmentation half is the VLTSeg above
                print(f"\n=== online replay (multitask_node: segmentation + detection, lock-step): {name}",
                      flush=True)
                online[name] = replay_online_multitask(bags / name, mt_model, report / "online" / name, logs,
                                                       multitask["detection_class_names"])
            else:
                print(f"\n=== online replay (segmentation_node, lock-step): {name}", flush=True)
                online[name] = replay_online(bags / name, model, report / "online" / name, logs)
        timings["online_replay"] = time.monotonic() - started

    rows = summary_rows(offline, online, json.loads(training_eval_path.read_text()))
    source = next(r["mIoU"] for r in rows if r["condition"] == "source")
    _write_markdown(report, rows, multitask, size, args.pretrained)
    return {"size": size.__dict__, "pretrained": args.pretrained, "rows": rows, "source_mIoU": source,
            "multitask": multitask, "model": str(model), "offline_report": str(offline_dir / "report.md"),
            "multitask_model": str(work / "multitask.onnx") if multitask else None}


def _multitask(args, size: DemoSize, work: Path, data: Path, logs: Path, report: Path, timings: dict) -> dict | None:
    enabled = MT_CONFIG.exists() if args.detection is None else args.detection
    if not enabled:
        return None
    if not MT_CONFIG.exists():
        raise StageError(f"--detection asked for, but {MT_CONFIG} does not exist")
    run = work / "mt_run"
    crop = f"[{size.height},{size.width}]"
    timings["mt_train"] = run_stage("mt_train", [
        "-m", "vlt_training.cli.train", "--config", str(MT_CONFIG), "--out", str(run), "--no-progress",
        f"data.root={data}", "data.synthetic.enabled=false", f"train.max_iters={size.det_iters}",
        f"train.checkpoint_interval={size.det_iters}", f"data.crop_size={crop}", f"eval.crop_size={crop}",
        # the detector's augmentation (tiny_det_cpu.yaml): the frozen segmentation half does not train here
        "data.augment.photometric=false", f"train.seed={args.seed}", "train.num_workers=1",
        pretrained_override(args.pretrained), f"model.init_from={work / 'run'}", *FROZEN_TOWER], logs)
    # Scenes of their own (another seed: none is a training image), rendered after training so they can't slow it.
    val = work / "mt_val"
    timings["mt_generate"] = run_stage("mt_generate", generate_args(val, 0, size.det_num_val, size, args.seed + 1),
                                       logs)
    out = report / "multitask_eval.json"
    timings["mt_evaluate"] = run_stage("mt_evaluate", [
        "-m", "vlt_training.cli.evaluate", "--checkpoint", str(run), "--out", str(out), f"data.root={val}",
        "data.synthetic.enabled=false"], logs)
    timings["mt_export"] = run_stage("mt_export", [
        "-m", "vlt_training.cli.export", "--checkpoint", str(run), "--format", "onnx",
        "--out", str(work / "multitask.onnx")], logs)
    result = json.loads(out.read_text())
    # the export's report (beside the graph) has the graph's metadata: the detection classes the node publishes
    names = json.loads((work / "multitask.export.json").read_text())["metadata"]["detection_class_names"]
    result["detection_class_names"] = list(names)
    return result


def format_multitask(report: dict) -> str:
    """One line per condition of the multi-task evaluate JSON: mIoU, AP50 and mAP, all from the one model."""
    def pct(value) -> str:
        return "  n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:5.1f}"

    lines = ["condition    mIoU   AP50    mAP"]
    for dataset in report.get("datasets", {}).values():
        for condition, entry in dataset.get("conditions", {}).items():
            name = "source" if condition in ("clear", "all") else condition
            lines.append(f"{name:<11} {pct(entry.get('mIoU'))}  {pct(entry.get('AP50'))}  {pct(entry.get('mAP'))}")
    return "\n".join(lines)


def _write_markdown(report: Path, rows: list[dict], multitask: dict | None, size: DemoSize, pretrained: str) -> None:
    start = "random weights" if pretrained_override(pretrained).endswith("null") else pretrained
    text = [
        "# vlt_perception demo", "",
        f"Synthetic benchmark: {size.num_train} source training images, {size.num_val} validation scenes per "
        f"condition, {size.height}x{size.width}; tiny VLTSeg fine-tuned {size.iters} iterations on the CPU from "
        f"{start}.", "",
        "```", format_table(rows), "```", "",
        "- offline evaluation (ONNX Runtime over the bags): [offline/report.md](offline/report.md) with the "
        "per-condition bar chart, confusion matrix, overlays and latency histogram",
        "- online lock-step replay through the ROS 2 segmentation node: `online/<condition>/report.md`",
        "- training-side evaluation: `training_eval.json`",
    ]
    if multitask is not None:
        text += ["- multi-task evaluation (mIoU and COCO AP per condition, one model): `multitask_eval.json`; "
                 "its ONNX graph (both contracts): `../multitask.onnx`", "",
                 f"VLTMT (tiny): VLTSeg above, frozen, plus a detection head trained {size.det_iters} iterations on "
                 f"its tower; {size.det_num_val} scenes of its own per condition:", "",
                 "```", format_multitask(multitask), "```", "",
                 "Its detection head, COCO AP per class:", "", "```", format_detection(multitask), "```"]
    atomic_write_text(report / "README.md", "\n".join(text) + "\n")


if __name__ == "__main__":
    sys.exit(main())
