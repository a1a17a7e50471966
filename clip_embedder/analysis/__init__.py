"""Analysis of one photo: a description, a sensitive-content verdict with reasons, labels with boxes.

| module              | what lives there                                                                   |
|---------------------|------------------------------------------------------------------------------------|
| `records`           | the schema (`Analysis`, `Sensitive`, `Reason`, `Label`, …), box clipping            |
| `faces`             | MediaPipe BlazeFace with MediaPipe's anchor decoding and weighted NMS               |
| `nudity`            | open_nsfw (image probability) and NudeNet (exposed regions), with their floors      |
| `personal_data`     | Presidio's pattern recognizers over the text read, findings mapped to line boxes    |
| `compose`           | the description sentence and the verdict, from the findings (pure)                  |
| `local`             | `LocalAnalyser`: runs the analysers a task needs, composes the `Analysis`           |
| `providers/`        | hosted vision-language models: OpenAI-compatible, Bedrock; prompts and validation   |
"""
