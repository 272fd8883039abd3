"""A tokenizer process: strings in, flat int32 id arrays out, over its stdin/stdout.

Run as a script (``python tokenizer_worker.py``), never imported by the package's import chain, so it starts
without torch. The parent (tokenizer_procs.py) writes requests; this process turns every encoding's ids into
arrays under its own GIL, which in-process costs the GPU-feeding thread its time (see BENCHMARKS.md).

Messages (little-endian). Setup: b"S", u64 length, the tokenizer's JSON. Request: b"R", header
(i32 n, i32 max_length or -1, u8 add_special_tokens, u8 pairs, u8 type_ids, u8 truncate_left), i64[n * (1 + pairs)]
UTF-8 byte lengths (all first texts, then all second texts), the texts' bytes. Reply: b"K", i64 n, i64 total,
i32[n] lengths, i32[total] ids, then i8[total] type ids if asked; or b"E", i64 length, i64 0, an error message
(both replies start with 17 bytes, which the parent reads before it knows which one came).

The worker stops when its stdin ends, when a reply cannot be written (the parent is gone: SIGPIPE), and, within
PARENT_CHECK_S, when its parent process is gone although its pipes stay open (a forked child of the parent holds
them). Not PR_SET_PDEATHSIG: Linux sends that when the *thread* that started the worker exits, and any thread of
the parent (a short-lived one in a user's thread pool) may be the first to tokenize.
"""

from __future__ import annotations

import itertools
import struct
import sys

REQUEST = struct.Struct("<iiBBBB")
REPLY = struct.Struct("<qq")
SIZE = struct.Struct("<Q")
HEAD = 1 + REPLY.size  # the bytes every reply starts with
PARENT = "ST_BACKEND_TOKENIZER_PARENT"  # the parent's pid, set in the worker's environment
PARENT_CHECK_S = 1.0  # how often the worker checks that its parent is still there


def _read(stream, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


def _texts(stream, count: int) -> list[str]:
    import numpy as np

    sizes = np.frombuffer(_read(stream, 8 * count), dtype=np.int64)
    blob = _read(stream, int(sizes.sum()))
    ends = np.cumsum(sizes).tolist()
    starts = [0, *ends[:-1]]
    return [blob[a:b].decode("utf-8", "surrogatepass") for a, b in zip(starts, ends)]


def configured(spec: str, max_length: int | None, side: str, split_special: bool = False):
    """A Rust tokenizer from its JSON, never padding, truncating longest-first to max_length (None: never), as a
    transformers tokenizer call with truncation="longest_first" does; ``split_special``: special tokens' text in
    the input is tokenized as ordinary text (transformers' split_special_tokens)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(spec)
    tokenizer.encode_special_tokens = split_special
    tokenizer.no_padding()
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length, strategy="longest_first", direction=side)
    return tokenizer


def _encode(tokenizers: dict, spec: str, header: tuple, texts: list) -> bytes:
    import numpy as np

    n, max_length, special, _, types, left = header
    key = (max_length, left)
    tokenizer = tokenizers.get(key)
    if tokenizer is None:
        limit = None if max_length < 0 else max_length
        tokenizer = tokenizers[key] = configured(spec, limit, "left" if left else "right")
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=bool(special))
    lengths = np.fromiter((len(e) for e in encodings), dtype=np.int32, count=n)
    total = int(lengths.sum(dtype=np.int64))
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=total)
    parts = [b"K", REPLY.pack(n, total), lengths.tobytes(), ids.tobytes()]
    if types:
        types_ = itertools.chain.from_iterable(e.type_ids for e in encodings)
        parts.append(np.fromiter(types_, dtype=np.int8, count=total).tobytes())
    return b"".join(parts)


def _watch_parent(parent: int) -> None:
    """Exit at once when this process no longer has ``parent`` as its parent (it died: we were re-parented)."""
    import os
    import time

    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)


def main() -> None:
    import os
    import signal

    # Run as a script, this file's folder comes first on sys.path: the package's modules there are not
    # top-level modules, and none may shadow one of the standard library's.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    # Ctrl-C is the parent's to handle; the worker stops when its stdin closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A reply to a parent that is gone ends the worker quietly (Python ignores SIGPIPE, which would raise
    # BrokenPipeError, caught below for a parent that blocks the signal).
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    parent = os.environ.get(PARENT)
    if parent:
        import threading

        threading.Thread(target=_watch_parent, args=(int(parent),), name="parent-watch", daemon=True).start()
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    spec = None
    tokenizers: dict = {}
    while True:
        try:
            kind = _read(source, 1)
        except EOFError:
            return
        try:
            if kind == b"S":
                spec = _read(source, SIZE.unpack(_read(source, SIZE.size))[0]).decode("utf-8")
                tokenizers.clear()
                continue
            header = REQUEST.unpack(_read(source, REQUEST.size))
            n, pairs = header[0], header[3]
            texts = _texts(source, n * (1 + pairs))
            if pairs:
                texts = list(zip(texts[:n], texts[n:]))
            reply = _encode(tokenizers, spec, header, texts)
        except EOFError:
            return
        except Exception as exc:  # reported to the parent, which raises it
            message = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")
            reply = b"E" + REPLY.pack(len(message), 0) + message
        try:
            sink.write(reply)
            sink.flush()
        except OSError:  # the parent is gone
            os._exit(0)


if __name__ == "__main__":
    main()
