"""Typed dependencies for the routes (full-stack-fastapi-template style)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from clip_embedder.config import Settings
from clip_embedder.search import SearchService


def get_service(request: Request) -> SearchService:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise HTTPException(503, "the search service is still starting")
    return service


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


ServiceDep = Annotated[SearchService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
