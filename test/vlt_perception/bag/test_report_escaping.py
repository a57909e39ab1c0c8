"""Strings that come from a bag (condition names, topic names in errors, bag names) cannot inject Markdown or HTML
into report.md, nor break its figures."""

from __future__ import annotations

import json
import re

from vlt_perception.bag.offline import evaluate_bags
from vlt_perception.bag.report import MAX_TEXT, markdown, md_text
from vlt_perception.bag.writer import write_records_bag

CRAFTED = "fog | 99.9 | 99.9 |\n# Pwned <img src=x onerror=alert(1)> [click](http://evil.example) `x` $\\frac{$"


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_md_text_is_inert():
    text = md_text(CRAFTED)
    assert "\n" not in text and "<" not in text and ">" not in text
    assert "\\[click\\]" in text and "](" not in text.replace("\\]", "")
    assert _unescaped_pipes(text) == 0 and "\\`x\\`" in text
    assert len(md_text("a" * 10 * MAX_TEXT)) == MAX_TEXT


def test_bag_supplied_strings_are_escaped_in_report_md(fx, tiny_cityscapes, palette_onnx, tmp_path):
    _, records = tiny_cityscapes
    records = [{**r, "condition": CRAFTED} if r["condition"] == "fog" else r for r in records]
    write_records_bag(records, tmp_path / "bag", read_image=fx.read_png_rgb, read_sem_seg=fx.read_png_train_ids)
    # the figures are drawn too: "$...$" in a label must not be parsed as (broken) mathtext
    evaluate_bags([tmp_path / "bag"], palette_onnx, tmp_path / "report", figures=True)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert CRAFTED in report["conditions"]  # report.json keeps the string as it is
    md = (tmp_path / "report" / "report.md").read_text()
    assert "<img" not in md and not re.search(r"(?<!\\)\]\(http", md)  # no raw HTML, no link
    assert not any(line.startswith("# Pwned") for line in md.splitlines())  # no heading
    table = [line for line in md.splitlines() if line.startswith("| ") and "frames" not in line]
    header = next(line for line in md.splitlines() if line.startswith("| condition |"))
    assert all(_unescaped_pipes(line) == _unescaped_pipes(header) for line in table if "Pwned" in line)
    assert any("Pwned" in line for line in table)  # the crafted condition has its row, inert


def test_errors_quoting_topics_are_escaped():
    report = {"bags": {"b|ag": {"frames": 0, "error": "topic /x\n## injected <b>bold</b>", "counts": {}}}}
    md = markdown(report)
    assert "\n## injected" not in md and "<b>" not in md and "b\\|ag" in md
