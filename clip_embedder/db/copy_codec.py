"""The binary COPY codec of (int8 id, pgvector vector) rows: how vectors stream in and out of PostgreSQL in bulk."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg

#: the first bytes of a COPY … (FORMAT BINARY) stream (PostgreSQL docs, "COPY": binary format, file header)
PGCOPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def decode_copy_rows(data: bytes, row_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode whole rows of a binary COPY of (int8 id, pgvector vector) columns.

    Each row is: int16 field count (2), int32 length 8, int64 id, int32 length, then pgvector's binary
    `vector` (int16 dim, int16 unused, dim float32), all big-endian (PostgreSQL docs, "COPY", binary
    format; pgvector's `vector_send`). Every row of a `vector(dim)` column has the same width, so numpy
    reads them as one structured array.

    Returns:
        (ids int64 (n,), vectors float32 (n, dim)).

    Raises:
        RuntimeError: a row that is not (int8, vector of this width) (a NULL, another column type).
    """
    dim = (row_size - 22) // 4
    rows = np.frombuffer(data, np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("vec_len", ">i4"),
                                         ("dim", ">i2"), ("unused", ">i2"), ("vec", ">f4", (dim,))]))
    if len(rows) and not ((rows["fields"] == 2).all() and (rows["id_len"] == 8).all()
                          and (rows["vec_len"] == 4 + 4 * dim).all() and (rows["dim"] == dim).all()):
        raise RuntimeError("unexpected row in the COPY BINARY stream of vectors (expected int8, vector)")
    return rows["id"].astype(np.int64), rows["vec"].astype(np.float32)


def encode_copy_rows(ids: np.ndarray, vectors: np.ndarray) -> bytes:
    """The rows of a binary COPY of (int8 id, pgvector vector) columns, without the file header and trailer
    (`PGCOPY_SIGNATURE` + 8 zero bytes before, b"\\xff\\xff" after): the inverse of `decode_copy_rows`.

    Args:
        ids: int64 (n,). vectors: float32 (n, dim).
    """
    n, dim = vectors.shape
    rows = np.zeros(n, np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("vec_len", ">i4"),
                                 ("dim", ">i2"), ("unused", ">i2"), ("vec", ">f4", (dim,))]))
    rows["fields"], rows["id_len"], rows["id"] = 2, 8, ids
    rows["vec_len"], rows["dim"], rows["vec"] = 4 + 4 * dim, dim, vectors
    return rows.tobytes()


def copy_vectors(cur: psycopg.Cursor[Any], query: str, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Run `COPY (query) TO STDOUT (FORMAT BINARY)` for a query of (int8 id, vector) rows and yield them decoded:
    (ids int64 (n,), vectors float32 (n, dim)), at most `batch` rows at a time, in the query's order.

    Raises:
        RuntimeError: the stream is not the expected two columns (`decode_copy_rows`).
    """
    with cur.copy(f"COPY ({query}) TO STDOUT (FORMAT BINARY)") as copy:
        buf = bytearray()
        header_done = False
        row_size = 0
        for chunk in copy:
            buf += chunk
            if not header_done:
                if len(buf) < len(PGCOPY_SIGNATURE) + 8:
                    continue
                ext = int.from_bytes(buf[len(PGCOPY_SIGNATURE) + 4:len(PGCOPY_SIGNATURE) + 8], "big")
                start = len(PGCOPY_SIGNATURE) + 8 + ext
                if len(buf) < start:
                    continue
                if bytes(buf[:len(PGCOPY_SIGNATURE)]) != PGCOPY_SIGNATURE:
                    raise RuntimeError("COPY BINARY stream without its signature")
                del buf[:start]
                header_done = True
            if not row_size and len(buf) >= 18:
                if int.from_bytes(buf[:2], "big", signed=True) == -1:
                    break  # no rows: the trailer
                row_size = 18 + int.from_bytes(buf[14:18], "big")
            if row_size and len(buf) >= row_size * batch:
                n = len(buf) // (row_size * batch) * batch
                ids, vecs = decode_copy_rows(bytes(buf[:n * row_size]), row_size)
                del buf[:n * row_size]
                for i in range(0, n, batch):
                    yield ids[i:i + batch], vecs[i:i + batch]
        if row_size:
            n = len(buf) // row_size  # what is left before the 2-byte trailer
            ids, vecs = decode_copy_rows(bytes(buf[:n * row_size]), row_size)
            for i in range(0, n, batch):
                yield ids[i:i + batch], vecs[i:i + batch]
