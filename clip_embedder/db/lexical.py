"""Lexical search: full-text matches over items' keywords and phrase matches over the text read in images."""
from __future__ import annotations

from itertools import combinations

from psycopg.rows import tuple_row

from clip_embedder.db.common import Repository
from clip_embedder.db.records import LexicalHit

#: the most full-text matches one lexical query ranks (a bound on per-request work at any index size)
LEXICAL_CANDIDATES = 1_000  # at 1M items: 5-10 ms per query on 2 cores (benchmarks/bench_http_scale.py)


class LexicalRepository(Repository):
    """Full-text (`items.lexical`, 'simple' configuration) and OCR phrase (`images.ocr_text`) matching."""

    def search(self, terms: list[str], limit: int, label: str | None = None, *,
               groups: list[list[str]] | None = None, min_groups: int = 1) -> list[LexicalHit]:
        """Items whose keywords contain any of `terms` (full-text, 'simple' configuration), best first.

        Args:
            terms: lower-case words (each becomes a tsquery lexeme; they are OR-ed). limit: rows returned.
            label: only items with this detected label.
            groups, min_groups: a hit is `strong` (a sure keyword) only when its sure keywords hold words of at
                least `min_groups` of these groups (each a content word of the query with its variants); None:
                any term.

        Returns:
            `LexicalHit`s by descending rank (ts_rank_cd: more matched terms and denser matches rank higher), each
            with its image id and detection score (what ranking needs, without another lookup).
        """
        terms = [t for t in dict.fromkeys(terms) if t]
        if not terms:
            return []
        lexemes = [tsquery_lexeme(t) for t in terms]
        # ranking reads every matching row's tsvector: the matches are capped first (LEXICAL_CANDIDATES, the first
        # found through the GIN index), so a word most items carry ("person") costs a bounded amount per query at
        # any index size. No ORDER BY inside: ordering the matches by id made PostgreSQL walk the primary key
        # backwards filtering row by row (80-130 ms at 1M items for a rare word, against 5-10 ms this way)
        where = "lexical @@ to_tsquery('simple', %s)" + (" AND label = %s" if label else "")
        sql = (f"SELECT id, ts_rank_cd(lexical, q) AS rank, lexical @@ qa AS strong, image_id, score FROM "
               f"(SELECT id, lexical, image_id, score FROM items WHERE {where} LIMIT %s) m, "
               "to_tsquery('simple', %s) q, to_tsquery('simple', %s) qa")
        query = " | ".join(lexemes)
        args: list = [query, *([label] if label else []), LEXICAL_CANDIDATES, query,
                      _strong_query(lexemes, groups, min_groups)]
        # plain tuples straight into the NamedTuple (id int8, rank real, strong bool, image_id int8, score real or
        # NULL come as int, float, bool, int, float | None): the rows are on a search's critical path
        with self.conn() as c, c.cursor(row_factory=tuple_row) as cur:
            return list(map(LexicalHit._make, cur.execute(sql + " ORDER BY strong DESC, rank DESC, id LIMIT %s",
                                                          (*args, limit))))

    def ocr_match(self, phrases: list[str], limit: int = 1000) -> list[int]:
        """Ids of images whose OCR text contains every phrase (case-insensitive substring; white space is
        ignored on both sides, since OCR splits and joins words unreliably, Korean above all), most recent first."""
        phrases = ["".join(p.split()) for p in phrases if p.strip()]
        if not phrases:
            return []

        def esc(p: str) -> str:
            return "%" + p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where = " AND ".join([r"regexp_replace(ocr_text, '\s+', '', 'g') ILIKE %s"] * len(phrases))
        with self.conn() as c:
            return [int(r["id"]) for r in c.execute(f"SELECT id FROM images WHERE {where} ORDER BY id DESC LIMIT %s",
                                                    (*[esc(p) for p in phrases], limit))]


def tsquery_lexeme(t: str) -> str:
    """A word as a quoted tsquery lexeme (quotes doubled, backslashes dropped)."""
    return "'" + t.replace("'", "''").replace("\\", "") + "'"


def _strong_query(lexemes: list[str], groups: list[list[str]] | None, min_groups: int) -> str:
    """The tsquery of a sure match: any sure (weight A) lexeme, or, with `groups`, sure lexemes of at least
    `min_groups` groups (an OR over the groups' combinations of that size; at most 8 groups are used)."""
    if not groups or min_groups <= 1:
        return " | ".join(x + ":A" for x in lexemes)
    alts = ["(" + " | ".join(tsquery_lexeme(t) + ":A" for t in g) + ")" for g in groups[:8] if g]
    k = min(min_groups, len(alts))
    return " | ".join("(" + " & ".join(c) + ")" for c in combinations(alts, k))
