"""Search: image queries (detect → per-object and whole-image neighbours) and text queries as steps (parse →
candidates per signal → reciprocal rank fusion → relevance decision → hits), served by `SearchService`."""
