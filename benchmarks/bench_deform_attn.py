"""Deformable attention on the CPU engines: the gather form (every export's default) against ``grid_sample``.

    flock /tmp/bench.lock python benchmarks/bench_deform_attn.py \
        --cases vltseg_tiny_mask2former:128x256,vltseg_vit_s16_mask2former:512x1024 \
        --engines onnxruntime:fp32,openvino:bf16,openvino:fp32 --iters 7 --out deform_attn.json

For every model (random weights) the model is exported twice to ONNX, once with ``MSDeformAttn.eval_sampling =
"point"`` (one ``GridSample`` per level and point) and once with ``"gather"`` (``Gather`` and arithmetic, no
``GridSample``), and the attention op alone is exported the same two ways at the shapes the model's pixel decoder
uses (``core``: the op's own cost, without the tower). Each engine runs both graphs side by side in one run,
interleaved (the order alternates every iteration, so drift in the machine's speed hits both alike), and reports
the median latency of each and their ratio, plus how the two graphs' outputs agree: label agreement and the largest
confidence difference for the models, the largest absolute difference for the op. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_report import finish, machine_info, time_interleaved  # noqa: E402

log = logging.getLogger("bench_deform_attn")
FORMS = ("point", "gather")
ENGINES = {"onnxruntime": ("fp32",), "openvino": ("fp32", "bf16")}


def parse_cases(text: str) -> list[tuple[str, int, int]]:
    """'model:HxW,...' -> [(model, H, W)]."""
    cases = []
    for item in filter(None, text.split(",")):
        name, _, size = item.partition(":")
        try:
            height, width = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"case {item!r}: expected MODEL:HxW, e.g. vltseg_tiny_mask2former:128x256")
        cases.append((name, height, width))
    return cases


def parse_engines(text: str) -> list[tuple[str, str]]:
    """'engine:precision,...' -> [(engine, precision)], checked against :data:`ENGINES`."""
    pairs = []
    for item in filter(None, text.split(",")):
        engine, _, precision = item.partition(":")
        if precision not in ENGINES.get(engine, ()):
            raise argparse.ArgumentTypeError(f"engine {item!r}: choose from "
                                             f"{[f'{e}:{p}' for e, ps in ENGINES.items() for p in ps]}")
        pairs.append((engine, precision))
    return pairs


def onnx_output_names(path: Path) -> list[str]:
    import onnx

    return [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]


def count_ops(path: Path) -> dict[str, int]:
    """How many GridSample / Gather nodes the graph holds (the difference between the two forms)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    ops = [node.op_type for node in graph.node]
    return {"GridSample": ops.count("GridSample"), "Gather": ops.count("Gather"), "nodes": len(ops)}


def decoder_attention_shapes(model, height: int, width: int) -> dict:
    """The shapes the first deformable attention of the model's pixel decoder is called with, from one forward."""
    import torch

    from vlt_training.modeling.pixel_decoder.ms_deform_attn import MSDeformAttn

    attn = next(m for m in model.modules() if isinstance(m, MSDeformAttn))
    seen = {}

    def hook(module, args):
        query, _, value, spatial_shapes = args
        seen.update(queries=query.shape[1], spatial_shapes=[tuple(int(v) for v in s) for s in spatial_shapes])

    handle = attn.register_forward_pre_hook(hook)
    try:
        with torch.inference_mode():
            model.export_module()(torch.zeros(1, 3, height, width))
    finally:
        handle.remove()
    return {**seen, "heads": attn.n_heads, "channels": attn.d_model // attn.n_heads, "levels": attn.n_levels,
            "points": attn.n_points}


class _Core:
    """The sampling op alone as an exportable module (value, locations, weights -> output)."""

    @staticmethod
    def build(shapes: dict, method: str):
        import torch

        from vlt_training.modeling.pixel_decoder.ms_deform_attn import ms_deform_attn_core

        class Core(torch.nn.Module):
            def forward(self, value, locations, weights):
                return ms_deform_attn_core(value, shapes["spatial_shapes"], locations, weights, method=method)

        return Core().eval()

    @staticmethod
    def inputs(shapes: dict, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        s = sum(h * w for h, w in shapes["spatial_shapes"])
        m, d, n_l, n_p, q = shapes["heads"], shapes["channels"], shapes["levels"], shapes["points"], shapes["queries"]
        weights = rng.random((1, q, m, n_l * n_p)).astype(np.float32)
        weights /= weights.sum(-1, keepdims=True)
        # locations a little beyond [0, 1] as well: the border and outside paths are part of the cost
        return {"value": rng.standard_normal((1, s, m, d)).astype(np.float32),
                "locations": rng.uniform(-0.05, 1.05, (1, q, m, n_l, n_p, 2)).astype(np.float32),
                "weights": weights.reshape(1, q, m, n_l, n_p)}


def export_core(shapes: dict, method: str, path: Path) -> Path:
    import torch

    inputs = {k: torch.from_numpy(v) for k, v in _Core.inputs(shapes).items()}
    torch.onnx.export(_Core.build(shapes, method), tuple(inputs.values()), str(path), input_names=list(inputs),
                      output_names=["out"], opset_version=17, dynamo=False)
    return path


def export_model(model, metadata, method: str, path: Path) -> Path:
    from vlt_training.export import export_onnx
    from vlt_training.modeling.pixel_decoder.ms_deform_attn import MSDeformAttn

    previous = MSDeformAttn.eval_sampling
    MSDeformAttn.eval_sampling = method
    try:
        start = time.perf_counter()
        export_onnx(model, metadata, path, dynamic_batch=False)  # batch 1, as the nodes run
        log.info("exported %s in %.0f s", path.name, time.perf_counter() - start)
    finally:
        MSDeformAttn.eval_sampling = previous
    return path


class _Runner:
    """One compiled graph with a ``run(feeds) -> {name: array}`` call, for models and for the bare op."""

    def __init__(self, path: Path, engine: str, precision: str, threads: int | None):
        if engine == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            names = [o.name for o in self.session.get_outputs()]
            self.run = lambda feeds: dict(zip(names, self.session.run(None, feeds)))
        else:
            from vlt_perception.engines.openvino_engine import PRECISION_HINTS, import_openvino

            ov = import_openvino()
            config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
            if threads:
                config["INFERENCE_NUM_THREADS"] = int(threads)
            compiled = ov.Core().compile_model(str(path), "CPU", config)
            request = compiled.create_infer_request()
            # an output tensor may carry several names (OpenVINO keeps the producing node's): take the graph's
            graph_outputs = set(onnx_output_names(path))
            names = [next(iter(graph_outputs & o.get_names()), o.get_any_name()) for o in compiled.outputs]
            self.run = lambda feeds: {n: np.array(v) for n, v in zip(names, request.infer(feeds).values())}


def time_side_by_side(runners: dict[str, _Runner], feeds: dict, iters: int, warmup: int) -> dict[str, list[float]]:
    """Interleaved timing: every iteration runs each form once, the order alternating between iterations."""
    return time_interleaved({form: (lambda r=runner: r.run(feeds)) for form, runner in runners.items()}, iters, warmup)


def compare(outputs: dict[str, dict[str, np.ndarray]]) -> dict:
    """Agreement of the gather graph's outputs with the point graph's."""
    ref, out = outputs["point"], outputs["gather"]
    if "labels" in ref:
        return {"label_agreement": float(np.mean(ref["labels"] == out["labels"])),
                "max_confidence_diff": float(np.max(np.abs(ref["confidence"] - out["confidence"])))}
    return {"max_abs_diff": float(max(np.max(np.abs(ref[k] - out[k])) for k in ref))}


def run_case(label: str, graphs: dict[str, Path], feeds: dict, engines, args) -> list[dict]:
    rows = []
    ops = {form: count_ops(path) for form, path in graphs.items()}
    for engine, precision in engines:
        row = {"case": label, "engine": engine, "precision": precision, "ops": ops}
        try:
            runners = {form: _Runner(path, engine, precision, args.threads) for form, path in graphs.items()}
        except Exception as exc:  # an engine that is not installed or cannot compile: record why, go on
            row["skipped"] = f"{type(exc).__name__}: {exc}"
            log.info("skip %s %s %s: %s", label, engine, precision, row["skipped"])
            rows.append(row)
            continue
        times = time_side_by_side(runners, feeds, args.iters, args.warmup)
        for form in FORMS:
            row[f"{form}_median_ms"] = float(np.median(times[form])) * 1e3
            row[f"{form}_min_ms"] = float(np.min(times[form])) * 1e3
        row["gather_over_point"] = row["gather_median_ms"] / row["point_median_ms"]
        row.update(compare({form: runner.run(feeds) for form, runner in runners.items()}))
        row["iters"] = args.iters
        log.info("%s %s %s: point %.1f ms, gather %.1f ms (x%.2f)", label, engine, precision,
                 row["point_median_ms"], row["gather_median_ms"], row["gather_over_point"])
        rows.append(row)
        del runners
    return rows


def run(args) -> dict:
    import torch

    from vlt_training.export.model_metadata import metadata_for_model
    from vlt_training.modeling import create_model

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_deform_attn_") as tmp:
        workdir = Path(tmp)
        for name, height, width in args.cases:
            torch.manual_seed(0)
            model = create_model(name).eval()
            metadata = metadata_for_model(model, height, width)
            shapes = decoder_attention_shapes(model, height, width)
            tag = f"{name}@{height}x{width}"
            log.info("%s: decoder attention %s", tag, shapes)
            # both exports before any engine is loaded: the exporter's peak memory on top of loaded engines is
            # what runs out first at 512x1024
            graphs = {form: export_model(model, metadata, form, workdir / f"{name}_{form}_{height}.onnx")
                      for form in FORMS}
            if not args.skip_core:
                core = {form: export_core(shapes, form, workdir / f"core_{form}_{height}.onnx") for form in FORMS}
                rows += run_case(f"op {tag}", core, _Core.inputs(shapes), args.engines, args)
            images = np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)
            rows += run_case(f"model {tag}", graphs, {"images": images}, args.engines, args)
            for path in list(graphs.values()):
                path.unlink()
            del model
    return {"date": time.strftime("%Y-%m-%d", time.gmtime()), "results": rows,
            "machine": machine_info(torch),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}


def format_table(result: dict) -> str:
    lines = ["| case | engine | point ms | gather ms | gather / point | agreement |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for row in result["results"]:
        engine = f"{row['engine']} {row['precision']}"
        if "skipped" in row:
            lines.append(f"| {row['case']} | {engine} | - | - | - | skipped: {row['skipped'][:60]} |")
            continue
        if "label_agreement" in row:
            agree = f"labels {100 * row['label_agreement']:.3f} %, conf. diff {row['max_confidence_diff']:.2g}"
        else:
            agree = f"max diff {row['max_abs_diff']:.2g}"
        lines.append(f"| {row['case']} | {engine} | {row['point_median_ms']:.1f} | {row['gather_median_ms']:.1f} | "
                     f"{row['gather_over_point']:.2f} | {agree} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=parse_cases,
                   default="vltseg_tiny_mask2former:128x256,vltseg_vit_s16_mask2former:512x1024",
                   help="MODEL:HxW,... (random weights)")
    p.add_argument("--engines", type=parse_engines, default="onnxruntime:fp32,openvino:bf16,openvino:fp32",
                   help="ENGINE:PRECISION,... from " + ", ".join(f"{e}:{p}" for e, ps in ENGINES.items() for p in ps))
    p.add_argument("--iters", type=int, default=7, help="timed runs of each form (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the libraries' own)")
    p.add_argument("--skip-core", action="store_true", help="time the models only, not the bare op")
    p.add_argument("--out", type=Path, default=Path("deform_attn.json"))
    args = p.parse_args(argv)
    if isinstance(args.cases, str):  # argparse applies type= to string defaults too; kept for clarity
        args.cases = parse_cases(args.cases)
    if args.iters < 1:
        p.error("--iters must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run(args)
    return finish(args.out, result, format_table(result))


if __name__ == "__main__":
    sys.exit(main())
