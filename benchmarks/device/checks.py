"""The stages of ``benchmarks/device_run.py`` that check the device itself: ``env`` (the GPU, torch,
CUDA, astra and where each packed module came from), ``tests`` (``pytest -m cuda``) and
``projector`` (``benchmarks/ct_projector.py``: the CT projectors' speed and adjoint error on the
GPU, astra's CUDA projector included where astra has a CUDA build)."""

from __future__ import annotations

import importlib.util
import re
import xml.etree.ElementTree as ElementTree
from typing import Any

from .stage import REPO, Context, Step, printed_json, read_json, step_record


def _env_probe() -> str:
    """Python run by the env stage: prints one ``ENV_JSON {...}`` line."""
    return r'''
import importlib, json, os, platform, sys, time
info = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform()}
start = time.perf_counter()
import torch
info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
            cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            torch_import_s=round(time.perf_counter() - start, 2))
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(device=torch.cuda.get_device_name(0), capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                multiprocessors=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1),
                device_count=torch.cuda.device_count())
site = os.environ.get("DEVICE_SITE", "")
modules = {}
for name in ("astra", "hydra", "omegaconf", "antlr4", "nibabel", "pydicom", "sigpy", "pywt", "nilearn",
             "numpy", "scipy", "h5py", "safetensors", "numba", "recon"):
    try:
        m = importlib.import_module(name)
        where = os.path.dirname(getattr(m, "__file__", "") or "")
        modules[name] = {"version": str(getattr(m, "__version__", "")),
                         "packed": bool(site) and where.startswith(site)}
    except Exception as err:
        modules[name] = {"error": f"{type(err).__name__}: {err}"[:300]}
info["modules"] = modules
try:
    import astra
    info["astra_use_cuda"] = bool(astra.use_cuda())
except Exception as err:
    info["astra_use_cuda"] = None
    info["astra_error"] = f"{type(err).__name__}: {err}"[:300]
if torch.cuda.is_available() and info.get("astra_use_cuda"):
    try:  # astra's own CUDA projector (backend="astra" on CUDA tensors) against its CPU projector
        from operators import parallel_beam_ct
        x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
        cpu = parallel_beam_ct(64, 16, backend="astra")(x)
        gpu = parallel_beam_ct(64, 16, backend="astra").to("cuda")(x.cuda()).cpu()
        info["astra_cuda_projector_rel_diff"] = float((gpu - cpu).norm() / cpu.norm())
    except Exception as err:
        info["astra_cuda_projector_error"] = f"{type(err).__name__}: {err}"[:300]
print("ENV_JSON " + json.dumps(info))
'''


def build_env(ctx: Context) -> list[Step]:
    return [
        Step("nvidia-smi", ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                            "--format=csv,noheader"], timeout_s=30, gpu_only=True, required=False),
        Step("probe", [ctx.python, "-c", _env_probe()], timeout_s=120),
    ]


def collect_env(ctx: Context, rec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = rec.setdefault("results", {})  # filled in place: kept when a check below fails
    smi = step_record(rec, "nvidia-smi")
    if smi and smi.get("status") == "passed":
        out["nvidia_smi"] = smi["output"].strip().splitlines()[0] if smi["output"].strip() else ""
    out.update(printed_json(rec, "probe", "ENV_JSON ") or {})
    if not ctx.smoke and not out.get("cuda_available"):
        raise RuntimeError("torch sees no CUDA device")
    if out.get("modules", {}).get("astra", {}).get("error"):
        raise RuntimeError(f"astra does not import: {out['modules']['astra']['error']}")
    return out


def cuda_test_files() -> list[str]:
    """Test files that mark tests ``cuda`` (``mark.cuda`` in their text; not conftest.py)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "mark.cuda" in p.read_text(errors="replace"))


def build_tests(ctx: Context) -> list[Step]:
    junit = ctx.dir("tests") / "junit.xml"
    junit.parent.mkdir(parents=True, exist_ok=True)
    # One hung test must not take the stage (and its junit XML) with it: pytest-timeout where installed
    # (the GPU image has it).
    per_test = ["--timeout=100"] if importlib.util.find_spec("pytest_timeout") else []
    # xunit1: the junit XML keeps what tests record with record_property without a warning.
    return [Step("pytest", [ctx.python, "-m", "pytest", "-m", "cuda", "-q", "-rfEs", "--continue-on-collection-errors",
                            "-p", "no:cacheprovider", f"--junitxml={junit}", "-o", "junit_family=xunit1", *per_test,
                            *cuda_test_files()])]


PROGRESS = re.compile(r"^(?:tests/\S+\.py )?([.FEsxX]+)\s*(?:\[\s*\d+%\])?$")  # -q: "..F.s  [ 40%]"


def collect_tests(ctx: Context, rec: dict[str, Any]) -> dict[str, Any]:
    junit = ctx.dir("tests") / "junit.xml"
    if not junit.is_file():  # stopped before the end: count the outcomes pytest -q printed per file
        marks = "".join(m.group(1) for line in (step_record(rec, "pytest") or {}).get("output", "").splitlines()
                        if (m := PROGRESS.match(line.strip())))
        rec["results"] = {"files": cuda_test_files(), "passed": marks.count("."), "failed": marks.count("F"),
                          "errors": marks.count("E"), "skipped": marks.count("s"),
                          "note": "from pytest's progress lines (no junit XML: pytest did not finish)"}
        raise RuntimeError("pytest wrote no junit XML")
    root = ElementTree.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failures, skip_reasons, measured = [], {}, {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for prop in case.iter("property"):  # numbers a test recorded (record_property), e.g. adjoint errors
            measured.setdefault(name, {})[prop.get("name", "")] = prop.get("value")
        for tag in ("failure", "error"):
            for node in case.findall(tag):
                message = (node.get("message") or node.text or "").strip().splitlines()
                failures.append({"test": name, "kind": tag, "message": (message[0] if message else "")[:300]})
        for node in case.findall("skipped"):
            reason = (node.get("message") or "").strip()[:200]
            skip_reasons[reason] = skip_reasons.get(reason, 0) + 1
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    out = {"files": cuda_test_files(), "passed": passed, "failed": counts["failures"], "errors": counts["errors"],
           "skipped": counts["skipped"], "failures": failures, "skip_reasons": skip_reasons, "measured": measured}
    if ctx.smoke and passed == 0 and counts["skipped"] == counts["tests"]:
        out["note"] = "skipped: no GPU (every cuda test skips on the CPU; collected and imported)"
    return out


def build_projector(ctx: Context) -> list[Step]:
    argv = [ctx.python, str(REPO / "benchmarks" / "ct_projector.py"), "--json", str(ctx.tmp / "projector.json")]
    if ctx.smoke:
        argv += ["--device", "cpu", "--sizes", "32", "--views", "8", "--batches", "1,4", "--repeats", "1"]
    else:
        argv += ["--device", "cuda", "--sizes", "128,256", "--views", "16,90", "--batches", "1,16,128"]
    return [Step("ct_projector", argv)]


def _significant(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else float(f"{value:.{digits}g}")


def collect_projector(ctx: Context, rec: dict[str, Any]) -> dict[str, Any]:
    """ct_projector's rows, compact, and whether astra's CUDA projector was measured: its
    backprojection is only approximately the transpose, and these rows are where that shows."""
    report = read_json(ctx.tmp / "projector.json", "ct_projector")
    rows = [{"geometry": f"{r['kind']} {r['size']}x{r['size']}, {r['views']} views", "backend": r["backend"],
             "batch": r["batch"], "slices_per_s": _significant(r["slices_per_second"], 4),
             "matrix_mib": _significant(r["matrix_mib"]), "build_s": _significant(r["build_seconds"]),
             "adjoint_error": {k: _significant(v) for k, v in r["adjoint_error"].items()}}
            for r in report["rows"]]
    astra = [r["adjoint_error"]["float32"] for r in rows if r["backend"] == "astra"]
    matrix = [r["adjoint_error"] for r in rows if r["backend"] == "matrix"]
    on_cuda = report["device"].startswith("cuda")
    use_cuda = report.get("astra_use_cuda")
    out = {"machine": report["machine"], "device": report["device"], "astra_use_cuda": use_cuda,
           "astra_cuda_rows": on_cuda and bool(astra),
           "astra_cuda_adjoint_error_max": max(astra) if on_cuda and astra else None,
           "matrix_adjoint_error_max": {k: max((e[k] for e in matrix), default=None) for k in ("float32", "float64")},
           "rows": rows}
    if not on_cuda:
        out["note"] = "CPU run: the astra rows are astra's CPU projector (its CUDA adjoint mismatch needs the GPU)"
    elif use_cuda is not True:
        out["note"] = f"astra.use_cuda() answered {use_cuda!r}: its CUDA projector was not measured"
    elif not astra:
        rec["results"] = out
        raise RuntimeError("astra.use_cuda() is true, yet ct_projector wrote no astra CUDA rows")
    return out
