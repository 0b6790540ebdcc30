"""Lossless coding of one tensor: sparse bitmap, codebook + packed indices, entropy coding.

A tensor becomes up to three streams:
- `mask`: a bitmap of its non-zero entries (when at least a quarter are zero),
- `index`: for each stored value its position in a small sorted `codebook` of distinct values
  (clustered weights, integer codes, ...), else `values`: the raw values,
and each stream is written with whichever of raw, zstd and canonical Huffman is smallest
(Huffman codes symbols: bytes of the bitmap, indices of the codebook; zstd codes the bit-packed
stream). The measurements of which wins are in docs/format.md.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np
import zstandard

MAX_CODE_LEN = 16
MAX_CODEBOOK = 4096


# ---------------------------------------------------------------------------------------------
# bit packing


def pack_bits(symbols: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers < 2**bits into a big-endian bit stream."""
    if bits == 0 or symbols.size == 0:
        return b""
    s = symbols.astype(np.uint32)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    return np.packbits(((s[:, None] >> shifts) & 1).astype(np.uint8).ravel()).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    if bits == 0:
        return np.zeros(count, dtype=np.int64)
    raw = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits].reshape(count, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.int64)
    return raw.astype(np.int64) @ weights


# ---------------------------------------------------------------------------------------------
# canonical Huffman


def huffman_lengths(counts: np.ndarray) -> np.ndarray:
    """Code length per symbol (0 for unused symbols) of a Huffman code for `counts`."""
    lengths = np.zeros(len(counts), dtype=np.int64)
    used = [int(i) for i in np.flatnonzero(counts)]
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    heap = [(int(counts[i]), i, [i]) for i in used]
    heapq.heapify(heap)
    while len(heap) > 1:
        c1, t1, s1 = heapq.heappop(heap)
        c2, t2, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, min(t1, t2), s1 + s2))
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values for the given lengths (symbols sorted by length, then value)."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, prev = 0, 0
    for sym in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[sym]) - prev
        codes[sym] = code
        prev = int(lengths[sym])
        code += 1
    return codes


def huffman_encode(symbols: np.ndarray, alphabet: int) -> bytes | None:
    """Header (alphabet code lengths, 1 byte each) + bit stream; None if a code would exceed 16 bits."""
    counts = np.bincount(symbols, minlength=alphabet)
    lengths = huffman_lengths(counts)
    if lengths.max(initial=0) > MAX_CODE_LEN:
        return None
    codes = canonical_codes(lengths)
    sym_len, sym_code = lengths[symbols], codes[symbols]
    total = int(sym_len.sum())
    starts = np.cumsum(sym_len) - sym_len
    bits = np.zeros(total, dtype=np.uint8)
    for j in range(int(lengths.max(initial=0))):
        sel = sym_len > j
        bits[starts[sel] + j] = (sym_code[sel] >> (sym_len[sel] - 1 - j)) & 1
    return lengths.astype(np.uint8).tobytes() + np.packbits(bits).tobytes()


def huffman_decode(data: bytes, alphabet: int, count: int) -> np.ndarray:
    lengths = np.frombuffer(data[:alphabet], dtype=np.uint8).astype(np.int64)
    codes = canonical_codes(lengths)
    width = int(lengths.max(initial=1))
    table_sym = np.zeros(1 << width, dtype=np.int64)
    table_len = np.zeros(1 << width, dtype=np.int64)
    for sym in np.flatnonzero(lengths):
        length = int(lengths[sym])
        start = int(codes[sym]) << (width - length)
        table_sym[start : start + (1 << (width - length))] = sym
        table_len[start : start + (1 << (width - length))] = length
    bits = np.unpackbits(np.frombuffer(data[alphabet:], dtype=np.uint8))
    bits = np.concatenate([bits, np.zeros(width, dtype=np.uint8)])
    n = len(bits) - width
    # the `width`-bit window starting at every bit position, then one table look-up per position
    windows = np.zeros(n, dtype=np.int64)
    for j in range(width):
        windows = (windows << 1) | bits[j : j + n]
    step = table_len[windows].tolist()
    positions = [0] * count
    pos = 0
    for k in range(count):
        positions[k] = pos
        pos += step[pos]
    return table_sym[windows[np.asarray(positions, dtype=np.int64)]] if count else np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# choosing the smallest coding of a stream


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=19).compress(data)


def encode_symbols(symbols: np.ndarray, alphabet: int) -> tuple[dict[str, Any], bytes]:
    """Smallest of: packed raw, zstd(packed), Huffman(symbols)."""
    bits = max(0, math.ceil(math.log2(alphabet))) if alphabet > 1 else 0
    packed = pack_bits(symbols, bits)
    options = [("packed", packed), ("zstd", _zstd(packed))]
    huff = huffman_encode(symbols, alphabet) if alphabet > 1 and symbols.size else None
    if huff is not None:
        options.append(("huffman", huff))
    codec, payload = min(options, key=lambda kv: len(kv[1]))
    return {"codec": codec, "bits": bits, "alphabet": alphabet, "count": int(symbols.size)}, payload


def decode_symbols(meta: dict[str, Any], payload: bytes) -> np.ndarray:
    if meta["codec"] == "huffman":
        return huffman_decode(payload, meta["alphabet"], meta["count"])
    if meta["codec"] == "zstd":
        payload = zstandard.ZstdDecompressor().decompress(payload)
    return unpack_bits(payload, meta["bits"], meta["count"])


def encode_bytes(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Smallest of raw, zstd and Huffman over byte symbols."""
    options = [("raw", data), ("zstd", _zstd(data))]
    if len(data) >= 256:
        huff = huffman_encode(np.frombuffer(data, dtype=np.uint8).astype(np.int64), 256)
        if huff is not None:
            options.append(("huffman", huff))
    codec, payload = min(options, key=lambda kv: len(kv[1]))
    return {"codec": codec, "count": len(data)}, payload


def decode_bytes(meta: dict[str, Any], payload: bytes) -> bytes:
    if meta["codec"] == "zstd":
        return zstandard.ZstdDecompressor().decompress(payload)
    if meta["codec"] == "huffman":
        return huffman_decode(payload, 256, meta["count"]).astype(np.uint8).tobytes()
    return payload


# ---------------------------------------------------------------------------------------------
# one tensor


def encode_array(a: np.ndarray) -> tuple[dict[str, Any], list[bytes]]:
    """Header + payload streams for an array of any numeric dtype (lossless)."""
    flat = np.ascontiguousarray(a).ravel()
    head: dict[str, Any] = {"dtype": str(a.dtype), "shape": list(a.shape), "streams": []}
    payloads: list[bytes] = []

    def add(kind: str, meta: dict[str, Any], payload: bytes) -> None:
        head["streams"].append({"kind": kind, "size": len(payload), **meta})
        payloads.append(payload)

    if flat.size < 32:
        add("values", {"codec": "raw", "count": flat.size * flat.itemsize}, flat.tobytes())
        return head, payloads
    nonzero = flat != 0
    if nonzero.mean() <= 0.75:
        add("mask", *encode_bytes(np.packbits(nonzero).tobytes()))
        values = flat[nonzero]
    else:
        values = flat
    uniq, inverse = np.unique(values, return_inverse=True)
    itemsize = flat.itemsize
    k = len(uniq)
    index_bits = math.ceil(math.log2(k)) if k > 1 else 0
    tensor_cost = k * itemsize + values.size * index_bits / 8 if k <= MAX_CODEBOOK else float("inf")
    rows = _row_codebooks(a, nonzero if "mask" in [s["kind"] for s in head["streams"]] else None)
    if rows is not None and rows[0] < min(tensor_cost, values.size * itemsize):
        _, table, symbols = rows
        head["row_codebook"] = list(table.shape)
        add("codebook", {"codec": "raw", "count": table.size * itemsize}, table.tobytes())
        add("index", *encode_symbols(symbols, table.shape[1]))
    elif tensor_cost < values.size * itemsize:
        add("codebook", {"codec": "raw", "count": k * itemsize}, uniq.tobytes())
        add("index", *encode_symbols(inverse.astype(np.int64), k))
    else:
        add("values", *encode_bytes(values.tobytes()))
    return head, payloads


def _row_codebooks(a: np.ndarray, nonzero: np.ndarray | None):
    """(estimated bytes, codebooks (rows, K), index symbols) when every row (output channel) takes
    few distinct values, e.g. clustered weights scaled per channel by batch-norm folding; else None."""
    if a.ndim < 2 or a.shape[0] < 2:
        return None
    matrix = a.reshape(a.shape[0], -1)
    keep = nonzero.reshape(matrix.shape) if nonzero is not None else np.ones(matrix.shape, dtype=bool)
    uniques = [np.unique(row[m]) for row, m in zip(matrix, keep)]
    k = max((len(u) for u in uniques), default=0)
    if k == 0 or k > 256 or k * len(uniques) * 4 > matrix.size:
        return None
    table = np.zeros((len(uniques), k), dtype=a.dtype)
    symbols = []
    for r, (row, m, u) in enumerate(zip(matrix, keep, uniques)):
        table[r, : len(u)] = u
        symbols.append(np.searchsorted(u, row[m]))
    symbols = np.concatenate(symbols).astype(np.int64)
    bits = math.ceil(math.log2(k)) if k > 1 else 0
    return table.nbytes + symbols.size * bits / 8, table, symbols


def decode_array(head: dict[str, Any], payloads: list[bytes]) -> np.ndarray:
    dtype, shape = np.dtype(head["dtype"]), tuple(head["shape"])
    n = int(np.prod(shape)) if shape else 1
    streams = dict(zip([s["kind"] for s in head["streams"]], zip(head["streams"], payloads)))
    mask = None
    if "mask" in streams:
        meta, payload = streams["mask"]
        mask = np.unpackbits(np.frombuffer(decode_bytes(meta, payload), dtype=np.uint8))[:n].astype(bool)
    if "row_codebook" in head:
        table = np.frombuffer(streams["codebook"][1], dtype=dtype).reshape(head["row_codebook"])
        per_row = (mask if mask is not None else np.ones(n, dtype=bool)).reshape(table.shape[0], -1).sum(1)
        row_of = np.repeat(np.arange(table.shape[0]), per_row)
        values = table[row_of, decode_symbols(*streams["index"])]
    elif "codebook" in streams:
        codebook = np.frombuffer(streams["codebook"][1], dtype=dtype)
        values = codebook[decode_symbols(*streams["index"])]
    else:
        meta, payload = streams["values"]
        values = np.frombuffer(decode_bytes(meta, payload), dtype=dtype)
    if mask is None:
        return values.reshape(shape).copy()
    out = np.zeros(n, dtype=dtype)
    out[mask] = values
    return out.reshape(shape)
