"""Receipts: a receipt photo (or its text lines) → structured fields (issue "Receipts → ledger").

| module     | what lives there                                                                            |
|------------|---------------------------------------------------------------------------------------------|
| `records`  | the receipt schema (`Receipt`, `ReceiptItem`, `ReceiptLine`)                                |
| `parsing`  | dates (`dateparser`, day first), amounts (`price-parser`), keyword sets                     |
| `rules`    | `RulesExtractor`: keyword and pattern rules, the baseline                                   |
| `learned`  | `LearnedExtractor`: a gradient-boosted classifier labelling OCR lines as fields             |
| `sroie`    | the shared SROIE layout (`img/`, `key/`, `box/`) and the task-3 scoring                     |
| `registry` | the learned extractor in MLflow (`receipt-extractor@champion`); `create_extractor`          |
"""
