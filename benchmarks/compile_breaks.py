"""Graph breaks of the packed forward under torch.compile, per architecture and attention backend (tiny models).

python benchmarks/compile_breaks.py [device]
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from tiny_models import build_st_dir  # noqa: E402

import st_backend  # noqa: E402
from st_backend import _compat  # noqa: E402
from st_backend.engine.packing import pack  # noqa: E402


def main() -> None:
    device = torch.device(sys.argv[1] if len(sys.argv) > 1 else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    root = Path(tempfile.mkdtemp())
    for arch in ("bert", "xlm-roberta", "modernbert", "qwen3", "llama"):
        model = st_backend.SentenceTransformer(str(build_st_dir(arch, root)), device=str(device)).to(dtype)
        engine = model.engine_for(None)
        runner = engine.runner(device)
        tokens = engine.tokenize(["hello world this is a test", "another one", "x"])
        batch = pack(tokens.ids, tokens.type_ids, np.arange(3)).to(device)
        with _compat.attention_implementation(runner.model, runner.attn_name):
            explained = torch._dynamo.explain(runner.model)(**runner.inputs(batch))
        reasons = sorted({str(r.reason).splitlines()[0][:160] for r in explained.break_reasons})
        print(
            f"{arch:12s} {runner.backend.name:10s} graphs {explained.graph_count:3d} breaks {explained.graph_break_count:3d}"
        )
        for reason in reasons:
            print(f"    {reason}")


if __name__ == "__main__":
    main()
