"""8 processes x 500 mixed reads/writes on one cache file: no errors, no lost entries, an intact file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from _together import run_together

from steadytext_async._cache.codec import decode_entry

PROCESSES = 8
OPS = 500

WORKER = r"""
import asyncio, json, logging, random, sys, zlib
from pathlib import Path
from steadytext_async._cache import CachedEntry, SqliteBackend
from steadytext_async._models import Chunk, Fingerprint, GenerationResult

path, proc, ops = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
warnings = []
class Count(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())
logging.getLogger("steadytext_async").addHandler(Count(logging.WARNING))

def text_of(key):
    return f"value of {key} " + "x" * (zlib.crc32(key.encode()) % 500)

def entry(key):
    text = text_of(key)
    values = dict(package_version="0", provider="local", model="m", prompt="p", max_new_tokens=8,
                  eos_string="[EOS]", temperature=0.0, seed=42, top_k=40, top_p=0.95, min_p=0.05, logprobs=False,
                  output_sha256="0" * 64)
    fp = Fingerprint(**{k: v for k, v in values.items() if k in Fingerprint.model_fields})
    result = GenerationResult(text=text, token_ids=[1, 2], finish_reason="length", provider="local", model="m",
                              fingerprint=fp)
    return CachedEntry(chunks=(Chunk(text=text[:5], token_ids=[1]), Chunk(text=text[5:], token_ids=[2])),
                       result=result, model_sha256="a" * 64, created=1.0)

async def main():
    backend = SqliteBackend(path, max_entries=10**6, max_bytes=1 << 40)
    rnd = random.Random(proc)
    written, errors, reads, found = [], 0, 0, 0
    await backend.stats()  # open (and maybe create) the file before the start signal
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(ops):
        roll = rnd.random()
        if roll < 0.4:
            key = f"p{proc}-{i}"
            await backend.put(key, entry(key))
            written.append(key)
            got = await backend.get(key)
            if got is None or got.result.text != text_of(key):
                errors += 1
        elif roll < 0.8:
            other = rnd.randrange(PROCS)
            key = f"p{other}-{rnd.randrange(ops)}"
            got = await backend.get(key)
            reads += 1
            if got is not None:
                found += 1
                if got.result.text != text_of(key) or "".join(c.text for c in got.chunks) != got.result.text:
                    errors += 1
        else:
            keys = rnd.sample(written, min(3, len(written))) if written else []
            await backend.account({k: 1 for k in keys}, 1)
    stats = await backend.stats()
    await backend.aclose()
    print(json.dumps({"written": written, "errors": errors, "backend_errors": stats.errors,
                      "warnings": warnings, "reads": reads, "found": found}), flush=True)

PROCS = int(sys.argv[4])
asyncio.run(main())
"""


@pytest.mark.timeout(120)
def test_many_processes_share_one_cache_file_safely(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "results.sqlite3"
    results = run_together([[WORKER, str(path), str(i), str(OPS), str(PROCESSES)] for i in range(PROCESSES)])
    reports = [report for report, _ in results]

    assert [r["warnings"] for r in reports] == [[]] * PROCESSES
    assert [r["errors"] for r in reports] == [0] * PROCESSES
    assert [r["backend_errors"] for r in reports] == [0] * PROCESSES
    assert [r["warnings"] for r in reports] == [[]] * PROCESSES
    written = {k for r in reports for k in r["written"]}
    assert len(written) == sum(len(r["written"]) for r in reports) > PROCESSES * OPS // 4
    assert sum(r["found"] for r in reports) > 0  # processes did read each other's entries

    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {k for (k,) in db.execute("SELECT key FROM entries")}
        assert stored == written  # 0 lost entries
        entries, size = db.execute("SELECT entries, bytes FROM meta").fetchone()
        assert entries == len(written)
        assert size == db.execute("SELECT sum(size) FROM entries").fetchone()[0]
        for key, value in db.execute("SELECT key, value FROM entries ORDER BY key LIMIT 50"):
            assert decode_entry(value).result.text.startswith(f"value of {key} ")
    finally:
        db.close()
