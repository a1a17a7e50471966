"""Hosted vision-language models as receipt extractors (RECEIPT_EXTRACTOR=openai|bedrock), against the local
stand-ins of the analysis providers' tests: the request carries the receipt prompt, the photo and the receipt JSON
schema at temperature 0.2; the answer becomes a checked `Receipt`; a bad answer twice is a ProviderError."""
from __future__ import annotations

import json
from datetime import date

import pytest
from PIL import Image

from clip_embedder.analysis.providers import ProviderError
from clip_embedder.receipts.hosted import RECEIPT_SCHEMA, HostedReceiptExtractor
from tests.unit.test_analysis_providers import FakeOpenAi, bedrock, claude, completion, provider

ANSWER = {"merchant": "이마트 성수점", "address": "서울특별시 성동구 뚝섬로 379", "date": "2024-03-15", "time": "14:23",
          "items": [{"name": "감자", "quantity": 2, "unit_price": 1500, "amount": 3000},
                    {"name": "우유", "quantity": 1, "unit_price": 2800, "amount": 2800}],
          "subtotal": None, "tax": 527, "total": 5800, "currency": "krw", "payment_method": "card"}


@pytest.fixture
def fake():
    f = FakeOpenAi()
    yield f
    f.server.shutdown()


def receipt_photo() -> Image.Image:
    return Image.new("RGB", (600, 1800), "white")


def test_openai_reads_a_receipt_with_the_schema_at_temperature_0_2(fake):
    fake.then(200, completion(json.dumps(ANSWER), tokens=(900, 120)))
    ex = HostedReceiptExtractor(provider(fake))
    r = ex.extract_image(receipt_photo(), today=date(2026, 1, 1))
    assert (r.merchant, r.date, r.time, r.total, r.tax, r.currency) == (
        "이마트 성수점", "2024-03-15", "14:23", 5800, 527, "KRW")
    assert [(i.name, i.quantity, i.unit_price, i.amount) for i in r.items] == [("감자", 2, 1500, 3000),
                                                                            ("우유", 1, 2800, 2800)]
    assert not r.needs_review and r.extractor == "openai" and ex.version == "test-model"
    assert (ex.usage.input_tokens, ex.usage.output_tokens, ex.usage.calls) == (900, 120, 1)
    body = fake.requests[0][3]
    assert body["temperature"] == 0.2
    assert body["response_format"]["json_schema"] == {"name": "receipt", "strict": True, "schema": RECEIPT_SCHEMA}
    prompt = body["messages"][0]["content"][0]["text"]
    assert "YYYY-MM-DD" in prompt and "ISO 4217" in prompt and '"merchant":' in prompt  # fields, types, an example


def test_a_wrong_sum_and_a_future_date_are_flagged_not_refused(fake):
    fake.then(200, completion(json.dumps({**ANSWER, "total": 9999, "date": "2031-01-01"})))
    r = HostedReceiptExtractor(provider(fake)).extract_image(receipt_photo(), today=date(2026, 1, 1))
    assert r.needs_review and r.total == 9999
    assert any("in the future" in x for x in r.review_reasons) and any("items sum" in x for x in r.review_reasons)


def test_invalid_json_twice_is_a_provider_error(fake):
    fake.then(200, completion("the total is 5,800 won")).then(200, completion('{"merchant": 3, "items": "x"}'))
    with pytest.raises(ProviderError, match="receipt task twice with invalid JSON"):
        HostedReceiptExtractor(provider(fake)).extract_image(receipt_photo())
    assert len(fake.requests) == 2


def test_bedrock_reads_a_receipt():
    from botocore.stub import ANY

    p, stub = bedrock()
    stub.add_response("invoke_model", claude("```json\n" + json.dumps(ANSWER) + "\n```"),
                      {"modelId": ANY, "body": ANY, "contentType": ANY, "accept": ANY})
    with stub:
        r = HostedReceiptExtractor(p).extract_image(receipt_photo(), today=date(2026, 1, 1))
    assert (r.merchant, r.total, r.extractor) == ("이마트 성수점", 5800, "bedrock")


def test_create_extractor_builds_the_hosted_one_from_the_analysis_settings(fake):
    from clip_embedder.config import Settings
    from clip_embedder.receipts.registry import create_extractor

    s = Settings(_env_file=None, receipt_extractor="openai", analysis_base_url=fake.url, analysis_model="m",
                 analysis_api_key="sk-x")
    ex = create_extractor(s)
    assert isinstance(ex, HostedReceiptExtractor) and ex.version == "m"
    with pytest.raises(TypeError, match="reads photos"):
        ex.extract([])
