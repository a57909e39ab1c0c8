"""One backbone pass for both tasks: per-frame ONNX Runtime engine time of (a) VLTSeg alone, (b) VLTSeg and VLTDet
run separately (two engines, two backbone passes) and (c) the multi-task VLTMT (one engine, one backbone pass),
side by side in one run, random weights (speed does not depend on them).

    python benchmarks/bench_multitask.py --sizes tiny,vit_s16 --iters 10 --out bench_multitask.json

Sizes: ``tiny`` (the demo's tiny models at 128x256) and ``vit_s16`` (OpenCLIP ViT-S/16 at 512x1024). The three
graphs of one size are exported fp32 with the package's exporter and timed in interleaved rounds (a, (b)'s
detector, c, a, ...), so a change in machine load hits all of them alike; the figures are medians over rounds
of ``engine.infer`` on one preprocessed frame, batch 1. (b) is the sum of VLTSeg's and VLTDet's engine times on
the same frame. Goal: (c) <= 1.15 x (a), where (b) is about 2 x (a).

``--test-proposals 300`` adds (c) with that many RPN proposals per image at test time
(``det_head.rpn_post_nms_topk=[<train>, 300]``; the recipes keep ViTDet's 1000) to the same interleaved rounds.
``--profile`` runs ONNX Runtime's profiler on each multi-task graph after the timing and splits the node time into
parts by graph structure (nodes feeding only the segmentation outputs, only the detection outputs, or both; the
detection nodes by stage: RPN, proposal selection and NMS, RoIAlign, box head, class decode and NMS), with the
number of proposals that survive the RPN's NMS (it depends on the weights: random ones here).

Accuracy of the two multi-task routes against separately trained models is ``--accuracy`` (training on the
synthetic benchmark at the demo's budget, several seeds; heavy: run it alone, see docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import cpu_name  # noqa: E402

SIZES = {
    # name: (height, width, VLTSeg, VLTDet, VLTMT)
    "tiny": (128, 256, "vltseg_tiny_mask2former", "vltdet_tiny_fasterrcnn", "vltmt_tiny_mask2former_fasterrcnn"),
    "vit_s16": (512, 1024, "vltseg_vit_s16_mask2former", "vltdet_vit_s16_fasterrcnn",
                "vltmt_vit_s16_mask2former_fasterrcnn"),
}


def proposal_overrides(name: str, proposals: int) -> dict:
    """Factory overrides that give ``name`` ``proposals`` RPN proposals per image at test time (training's kept)."""
    from vlt_training.modeling import create_model

    import torch

    torch.manual_seed(0)
    train = create_model(name).head.rpn._post_nms_top_n["training"]
    return {"det_head": {"rpn_post_nms_topk": [int(train), int(proposals)]}}


def export_model(name: str, height: int, width: int, folder: Path, overrides: dict | None = None,
                 tag: str = "") -> tuple[Path, int]:
    """Random-weight ``name`` exported fp32 at height x width; returns the graph and the number of valid RPN
    proposals of a random frame (multi-task models; -1 for the others)."""
    import torch

    from vlt_training.export import export_onnx
    from vlt_training.export.model_metadata import metadata_for_model
    from vlt_training.modeling import create_model

    torch.manual_seed(0)
    model = create_model(name, **(overrides or {})).eval()
    path, _ = export_onnx(model, metadata_for_model(model, height, width), folder / f"{name}{tag}.onnx")
    valid = -1
    if hasattr(model, "detection_features"):
        frame = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32))
        with torch.no_grad():
            pyramid, _ = model._features(frame)
            _, mask = model.head.proposals(model.detection_features(pyramid, frame), (height, width))  # 1, P
        valid = int(mask.sum())
    del model
    return path, valid


def load_engine(path: Path, threads: int | None):
    from vlt_perception.engines.onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"], intra_op_threads=threads)


def time_size(size: str, iters: int, warmup: int, threads: int | None, test_proposals: list[int] | None = None,
              profile: bool = False, profile_runs: int = 2) -> dict:
    height, width, seg_name, det_name, mt_name = SIZES[size]
    rng = np.random.default_rng(0)
    frame = rng.standard_normal((1, 3, height, width)).astype(np.float32)
    plan = [("seg", seg_name, None), ("det", det_name, None), ("multitask", mt_name, None)]
    for n in test_proposals or []:
        plan.append((f"multitask_p{n}", mt_name, proposal_overrides(mt_name, n)))
    profiles, proposals = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        engines, graphs = {}, {}
        for role, name, overrides in plan:
            start = time.perf_counter()
            graphs[role], valid = export_model(name, height, width, Path(tmp), overrides, tag=f"_{role}")
            if valid >= 0:
                proposals[role] = valid
            engines[role] = load_engine(graphs[role], threads)
            print(f"[{size}] exported {name} ({role}) in {time.perf_counter() - start:.1f} s", flush=True)
        for engine in engines.values():
            for _ in range(warmup):
                engine.infer(frame)
        times: dict[str, list[float]] = {role: [] for role in engines}
        for _ in range(iters):  # interleaved rounds
            for role, engine in engines.items():
                start = time.perf_counter()
                engine.infer(frame)
                times[role].append((time.perf_counter() - start) * 1e3)
        for engine in engines.values():
            engine.close()
        if profile:
            for role in [r for r, _, _ in plan if r.startswith("multitask")]:
                profiles[role] = profile_graph(graphs[role], frame, profile_runs, Path(tmp), threads)
                print(f"[{size}] {role} profile: {json.dumps(profiles[role]['share_percent'])}", flush=True)
    seg, det, mt = (statistics.median(times[r]) for r in ("seg", "det", "multitask"))
    ms = {"a_seg_alone": seg, "b_seg_plus_det": seg + det, "c_multitask": mt, "det_alone": det}
    ratio = {"b": (seg + det) / seg, "c": mt / seg}
    for n in test_proposals or []:
        ms[f"c_multitask_p{n}"] = statistics.median(times[f"multitask_p{n}"])
        ratio[f"c_p{n}"] = ms[f"c_multitask_p{n}"] / seg
    return {
        "size": size, "input": [height, width], "models": {"seg": seg_name, "det": det_name, "multitask": mt_name},
        "ms": ms, "ratio_to_a": ratio, "valid_proposals": proposals, "profiles": profiles,
        "rounds": iters, "samples_ms": times,
    }


# --- where the multi-task graph spends its time ------------------------------------------------------------
DET_STAGES = ("det: detail stem", "det: RPN convs + top-k + decode", "det: RPN NMS + proposal selection",
              "det: RoIAlign", "det: box head", "det: class decode + NMS prep", "det: final NMS + top-K")


def graph_parts(model) -> dict[str, str]:
    """Node name -> part of an ONNX Runtime-optimised multi-task graph, by structure: a node that feeds only the
    ``det_*`` outputs is detection, only the others segmentation, both the shared tower and pyramid. Detection
    nodes go to the stage after the last milestone (RPN NMS, RoIAlign, box head, class NMS) they depend on."""
    from collections import defaultdict

    producer = {out: node for node in model.graph.node for out in node.output}
    consumers = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)

    def walk(start, step) -> set[str]:
        seen, stack = set(), list(start)
        while stack:
            node = stack.pop()
            if node.name not in seen:
                seen.add(node.name)
                stack += step(node)
        return seen

    def up(outputs):
        return walk([producer[o] for o in outputs if o in producer],
                    lambda n: [producer[i] for i in n.input if i in producer])

    def down(nodes):
        return walk(nodes, lambda n: [c for o in n.output for c in consumers[o]])

    outputs = [o.name for o in model.graph.output]
    det = up([o for o in outputs if o.startswith("det_")])
    seg = up([o for o in outputs if not o.startswith("det_")])
    in_det = [n for n in model.graph.node if n.name in det and n.name not in seg]
    nms = [n for n in in_det if n.op_type == "NonMaxSuppression"]
    box = [n for n in in_det if "box_head" in n.name or "box_predictor" in n.name]
    after = {"nms1": down(nms[:1]), "roi": down([n for n in in_det if n.op_type == "RoiAlign"]),
             "box": down(box), "nms2": down(nms[1:])}
    parts = {}
    for node in model.graph.node:
        name = node.name
        if name in det and name in seg:
            parts[name] = "shared tower + pyramid"
        elif name in seg:
            parts[name] = "segmentation head"
        elif name not in det:
            parts[name] = "other"
        elif name in after["nms2"]:
            parts[name] = "det: final NMS + top-K"
        elif name in after["box"]:
            parts[name] = "det: box head" if any(b.name == name for b in box) else "det: class decode + NMS prep"
        elif name in after["roi"]:
            parts[name] = "det: RoIAlign"
        elif name in after["nms1"] or node.op_type == "NonMaxSuppression":
            parts[name] = "det: RPN NMS + proposal selection"
        elif "detail_stem" in name:
            parts[name] = "det: detail stem"
        else:
            parts[name] = "det: RPN convs + top-k + decode"
    return parts


def profile_graph(path: Path, frame: np.ndarray, runs: int, folder: Path, threads: int | None) -> dict:
    """ONNX Runtime profile of ``runs`` inferences (after one warm-up): node time per part (ms per frame, share)
    and per op type of the detection part."""
    from collections import Counter

    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / path.stem)
    options.optimized_model_filepath = str(folder / f"{path.stem}.optimized.onnx")  # the nodes that run
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(1 + runs):
        session.run(None, {"images": frame})
    events = json.loads(Path(session.end_profiling()).read_text())
    parts = graph_parts(onnx.load(options.optimized_model_filepath, load_external_data=False))
    per_part, det_ops = Counter(), Counter()
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        node = event["args"].get("node_name") or event["name"][: -len("_kernel_time")]
        part = parts.get(node, "other")
        per_part[part] += event["dur"]
        if part.startswith("det"):
            det_ops[event["args"]["op_name"]] += event["dur"]
    total = sum(per_part.values())
    calls = 1 + runs
    return {"node_ms_per_frame": {k: v / calls / 1e3 for k, v in per_part.most_common()},
            "share_percent": {k: round(100 * v / total, 1) for k, v in per_part.most_common()},
            "detection_ms_per_op_type": {k: v / calls / 1e3 for k, v in det_ops.most_common(12)},
            "runs": calls}


def format_table(rows: list[dict]) -> str:
    lines = ["size       input       (a) VLTSeg ms  (b) VLTSeg+VLTDet ms  (c) VLTMT ms  b/a    c/a   c<=1.15a",
             "-" * 96]
    for r in rows:
        ms, ratio = r["ms"], r["ratio_to_a"]
        lines.append(f"{r['size']:<10} {r['input'][0]}x{r['input'][1]:<8} {ms['a_seg_alone']:>13.1f}  "
                     f"{ms['b_seg_plus_det']:>20.1f}  {ms['c_multitask']:>12.1f}  {ratio['b']:.2f}  "
                     f"{ratio['c']:.2f}   {'yes' if ratio['c'] <= 1.15 else 'no'}")
        for key in [k for k in ratio if k.startswith("c_p")]:
            label = f"(c) {key[3:]} proposals"
            lines.append(f"{'':<10} {label:<55} {ms['c_multitask_' + key[2:]]:>12.1f}        "
                         f"{ratio[key]:.2f}   {'yes' if ratio[key] <= 1.15 else 'no'}")
    return "\n".join(lines)


# --- accuracy: the two multi-task routes against separate models, on the synthetic benchmark -----------------
def run(args: list[str], log: Path) -> None:
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, *args], stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed; log: {log}")


def per_condition(report: dict, metric: str, task: str | None = None) -> dict:
    out = {}
    for dataset in report["datasets"].values():
        for cond, entry in dataset["conditions"].items():
            value = entry[task][metric] if task and task in entry else entry.get(metric)
            out["source" if cond in ("all", "clear") else cond] = value
    return out


def accuracy(work: Path, seeds: list[int], iters: int, det_iters: int, num_train: int, num_val: int,
             height: int, width: int, pretrained: str, results: dict | None = None, save=lambda: None) -> dict:
    """Per seed: VLTSeg, VLTDet (tower from that VLTSeg, as the demo trains it), VLTMT joint (``iters``), VLTMT
    frozen-tower (detection head only, ``det_iters``, on the VLTSeg); per-condition mIoU and AP50 of each."""
    from vlt_training.cli.demo import SEG_CONFIG, DET_CONFIG, TRAIN_CONFIGS, generate_args, pretrained_override

    mt_config = TRAIN_CONFIGS / "tiny_mt_cpu.yaml"
    data, val = work / "data", work / "val"
    size = argparse.Namespace(height=height, width=width)
    run(generate_args(data, num_train, 2, size, 0), work / "generate.log")
    run(generate_args(val, 0, num_val, size, 1), work / "generate_val.log")
    crop = f"[{height},{width}]"
    common = [f"data.root={data}", "data.synthetic.enabled=false", f"data.crop_size={crop}"]
    results = {} if results is None else results
    for seed in seeds:
        runs = work / f"seed{seed}"
        runs.mkdir(parents=True, exist_ok=True)
        base = [*common, f"train.seed={seed}", "train.num_workers=1", pretrained_override(pretrained)]
        plan = {
            "vltseg": (SEG_CONFIG, [f"train.max_iters={iters}", f"train.checkpoint_interval={iters}"]),
            "vltdet": (DET_CONFIG, [f"train.max_iters={det_iters}", f"train.checkpoint_interval={det_iters}",
                                    f"model.init_from={runs / 'vltseg'}"]),
            "vltmt_joint": (mt_config, [f"train.max_iters={iters}", f"train.checkpoint_interval={iters}"]),
            "vltmt_frozen": (mt_config, [
                f"train.max_iters={det_iters}", f"train.checkpoint_interval={det_iters}",
                f"model.init_from={runs / 'vltseg'}",
                "model.init_prefixes=[backbone.,neck.,pixel_text.,pixel_decoder.,predictor.]",
                "model.overrides.seg_loss_weight=0.0", "model.overrides.freeze=[backbone,neck,segmentation]"]),
        }
        seed_result = results.setdefault(str(seed), {})
        for name, (config, extra) in plan.items():
            out = runs / name
            start = time.perf_counter()
            args = ["-m", "vlt_training.cli.train", "--config", str(config), "--out", str(out), "--no-progress",
                    *base, *extra]
            run(args, runs / f"{name}_train.log")
            train_s = time.perf_counter() - start
            report_path = runs / f"{name}_eval.json"
            run(["-m", "vlt_training.cli.evaluate", "--checkpoint", str(out), "--out", str(report_path),
                 f"data.root={val}", "data.synthetic.enabled=false"], runs / f"{name}_eval.log")
            report = json.loads(report_path.read_text())
            entry = {"train_s": train_s}
            if name != "vltdet":
                entry["mIoU"] = per_condition(report, "mIoU", "segmentation" if name.startswith("vltmt") else None)
            if name != "vltseg":
                entry["AP50"] = per_condition(report, "AP50", "detection" if name.startswith("vltmt") else None)
            seed_result[name] = entry
            save()  # partial results survive an interrupted run
            print(f"seed {seed} {name}: {json.dumps(entry)}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="tiny,vit_s16", help=f"comma-separated, of {sorted(SIZES)}")
    p.add_argument("--iters", type=int, default=10, help="timed rounds per size")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: its own)")
    p.add_argument("--test-proposals", default="",
                   help="comma-separated RPN test proposal counts to time as extra multi-task rows (e.g. 300)")
    p.add_argument("--profile", action="store_true", help="profile the multi-task graphs per part (ONNX Runtime)")
    p.add_argument("--profile-runs", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench_multitask.json"))
    p.add_argument("--accuracy", action="store_true", help="also train and compare the models (heavy)")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--train-iters", type=int, default=1000, help="VLTSeg / joint VLTMT iterations (demo: 1000)")
    p.add_argument("--det-iters", type=int, default=1200, help="VLTDet / frozen-tower iterations (demo: 1200)")
    p.add_argument("--num-train", type=int, default=400)
    p.add_argument("--num-val", type=int, default=16)
    p.add_argument("--pretrained", default="vlt-pretrained:vlt-tiny-clip")
    p.add_argument("--workdir", type=Path, default=Path("runs/bench_multitask"))
    args = p.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        p.error(f"unknown sizes {unknown}; known: {sorted(SIZES)}")
    report = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "machine": cpu_name(),
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "engine": "onnxruntime fp32 CPU, batch 1", "speed": []}
    for size in sizes:
        report["speed"].append(time_size(size, args.iters, args.warmup, args.threads,
                                         [int(n) for n in args.test_proposals.split(",") if n], args.profile,
                                         args.profile_runs))
        args.out.write_text(json.dumps(report, indent=2))
    print(format_table(report["speed"]))
    if args.accuracy:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report["accuracy"] = {}
        accuracy(args.workdir, [int(s) for s in args.seeds.split(",")], args.train_iters, args.det_iters,
                 args.num_train, args.num_val, 128, 256, args.pretrained, report["accuracy"],
                 lambda: args.out.write_text(json.dumps(report, indent=2)))
        args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
