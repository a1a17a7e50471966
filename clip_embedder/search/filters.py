"""Content filters on search results, from the stored analyses (`sensitive=exclude|only`, `faces=true`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clip_embedder.db.store import Store

#: how many more candidates a filtered image search fetches per list, so a list still holds top_k after filtering
OVERFETCH = 5


@dataclass(frozen=True)
class ContentFilter:
    """`sensitive`: "exclude" (only images analysed as not sensitive) or "only" (only sensitive ones), None = either;
    `faces`: only images with a face. An image not analysed yet passes no active filter (its content is unknown),
    and the answer's warning says how many were left out for that."""

    sensitive: Literal["exclude", "only"] | None = None
    faces: bool = False

    @property
    def active(self) -> bool:
        return self.sensitive is not None or self.faces

    def passing(self, store: Store, image_ids: set[int]) -> tuple[set[int], str | None]:
        """The images of `image_ids` that pass, and a warning when some were left out for not being analysed."""
        flags = store.analyses.flags(sorted(image_ids))
        keep = set()
        for image_id, (sensitive, faces) in flags.items():
            if self.sensitive == "exclude" and sensitive is not False:
                continue
            if self.sensitive == "only" and not sensitive:
                continue
            if self.faces and faces <= 0:
                continue
            keep.add(image_id)
        unknown = len(image_ids) - len(flags)
        warning = (f"{unknown} matching image(s) not analysed yet were left out by the content filter (their content "
                   "is unknown): ANALYZE=true analyses every indexed image, `embed_and_index --analyze` those of a "
                   "folder") if unknown else None
        return keep, warning
