"""Korean receipts rendered with Pillow (a Hangul font from Debian's fonts-nanum), in the shared SROIE layout, with
their ground truth: `img/NNN.jpg`, `key/NNN.json` (company, date, address, total — as SROIE's key files), `box/NNN.csv`
(each printed cell's box and text) and `items/NNN.json` (every item: name, quantity, unit price, amount in won).

    python benchmarks/korean_receipts.py OUT_DIR [--n 12] [--seed 0] [--font FILE.ttf]

Merchants, addresses and goods are common Korean ones; dates are printed in the three forms Korean tills use
(2024-03-15, 2024.03.15, 2024년 03월 15일); prices are whole won with thousands separators; the total follows 합계.
"""
from __future__ import annotations

import argparse
import json
import random
from datetime import date, timedelta
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT = Path("/usr/share/fonts/truetype/nanum/NanumGothic.ttf")
MERCHANTS = [("이마트 성수점", "서울특별시 성동구 뚝섬로 379"), ("홈플러스 강서점", "서울특별시 강서구 화곡로 398"),
             ("롯데마트 잠실점", "서울특별시 송파구 올림픽로 240"), ("GS25 역삼점", "서울특별시 강남구 테헤란로 152"),
             ("김밥천국 신촌점", "서울특별시 서대문구 연세로 12"), ("다이소 홍대점", "서울특별시 마포구 양화로 153"),
             ("올리브영 명동점", "서울특별시 중구 명동길 53"), ("파리바게뜨 종로점", "서울특별시 종로구 종로 69"),
             ("교보문고 광화문점", "서울특별시 종로구 종로 1"), ("CU 합정점", "서울특별시 마포구 월드컵로 21"),
             ("하나로마트 양재점", "서울특별시 서초구 청계산로 10"),
             ("세븐일레븐 서초점", "서울특별시 서초구 서초대로 77")]
GOODS = [("감자", 1500), ("우유", 2800), ("계란", 6900), ("라면", 4500), ("삼각김밥", 1200), ("콜라", 2000),
         ("아메리카노", 4500), ("김밥", 3500), ("두부", 1800), ("사과", 5000), ("바나나", 3980), ("생수", 900),
         ("식빵", 3200), ("치즈", 4700), ("볼펜", 1000), ("공책", 2500), ("세제", 8900), ("휴지", 12900)]
DATE_FORMS = ("{d:%Y-%m-%d} {t}", "{d:%Y.%m.%d} {t}", "{d:%Y}년 {d:%m}월 {d:%d}일 {t}")
WIDTH, SIZE, LINE = 560, 24, 38
COLS = (24, 250, 360, 430)  # name, unit price, quantity, amount (left edges; numbers are right-aligned to the next)


def won(v: int) -> str:
    return f"{v:,}"


def _receipt(rng: random.Random) -> dict:
    merchant, address = rng.choice(MERCHANTS)
    day = date(2024, 1, 1) + timedelta(days=rng.randrange(600))
    time = f"{rng.randrange(8, 23):02d}:{rng.randrange(60):02d}"
    items = [{"name": n, "quantity": q, "unit_price": p, "amount": q * p}
             for (n, p), q in zip(rng.sample(GOODS, rng.randint(2, 5)), (rng.randint(1, 3) for _ in range(5)))]
    total = sum(it["amount"] for it in items)
    return {"merchant": merchant, "address": address, "date": day, "time": time, "items": items, "total": total,
            "pay": rng.choice(("카드", "현금")), "form": rng.choice(DATE_FORMS),
            "tel": f"02-{rng.randrange(200, 999)}-{rng.randrange(1000, 9999)}",
            "brn": f"{rng.randrange(100, 999)}-{rng.randrange(10, 99)}-{rng.randrange(10000, 99999)}"}


def render(r: dict, font: ImageFont.FreeTypeFont) -> tuple[Image.Image, list[tuple[tuple[int, int, int, int], str]]]:
    """The receipt as an image and its printed cells [(box xyxy, text)]."""
    rows: list[list[tuple[int, str, str]]] = [  # (x, text, align) per printed row
        [(WIDTH // 2, r["merchant"], "center")], [(COLS[0], f"사업자번호 {r['brn']}", "left")],
        [(COLS[0], r["address"], "left")], [(COLS[0], f"전화 {r['tel']}", "left")],
        [(COLS[0], r["form"].format(d=r["date"], t=r["time"]), "left")], [],
        [(COLS[0], "상품명", "left"), (COLS[2] - 10, "단가", "right"), (COLS[3] - 10, "수량", "right"),
         (WIDTH - COLS[0], "금액", "right")]]
    for it in r["items"]:
        rows.append([(COLS[0], it["name"], "left"), (COLS[2] - 10, won(it["unit_price"]), "right"),
                     (COLS[3] - 10, str(it["quantity"]), "right"), (WIDTH - COLS[0], won(it["amount"]), "right")])
    vat = round(r["total"] / 11)
    rows += [[], [(COLS[0], "합계", "left"), (WIDTH - COLS[0], won(r["total"]), "right")],
             [(COLS[0], "부가세", "left"), (WIDTH - COLS[0], won(vat), "right")],
             [(COLS[0], r["pay"], "left"), (WIDTH - COLS[0], won(r["total"]), "right")]]
    img = Image.new("RGB", (WIDTH, LINE * (len(rows) + 2)), "white")
    d = ImageDraw.Draw(img)
    cells = []
    for n, row in enumerate(rows):
        y = LINE * (n + 1)
        if not row:
            d.line((COLS[0], y + LINE // 2, WIDTH - COLS[0], y + LINE // 2), fill="black", width=1)
        for x, text, align in row:
            w = round(d.textlength(text, font=font))
            x1 = x - w // 2 if align == "center" else x - w if align == "right" else x
            d.text((x1, y), text, fill="black", font=font)
            cells.append(((x1, y, x1 + w, y + SIZE + 4), text))
    return img.filter(ImageFilter.GaussianBlur(0.4)), cells


def write(out: Path, n: int = 12, seed: int = 0, font_path: Path = FONT) -> list[str]:
    """Render `n` receipts into `out` (SROIE layout plus items/); returns their names."""
    font = ImageFont.truetype(str(font_path), SIZE)
    rng = random.Random(seed)
    for sub in ("img", "key", "box", "items"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"{i:03d}"
        r = _receipt(rng)
        img, cells = render(r, font)
        img.save(out / "img" / f"{name}.jpg", quality=88)
        (out / "key" / f"{name}.json").write_text(json.dumps(
            {"company": r["merchant"], "date": r["date"].isoformat(), "address": r["address"],
             "total": f"{r['total']}"}, ensure_ascii=False, indent=1), encoding="utf-8")
        (out / "box" / f"{name}.csv").write_text("".join(
            f"{x1},{y1},{x2},{y1},{x2},{y2},{x1},{y2},{text}\n" for (x1, y1, x2, y2), text in cells), encoding="utf-8")
        (out / "items" / f"{name}.json").write_text(json.dumps(r["items"], ensure_ascii=False), encoding="utf-8")
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--font", type=Path, default=FONT, help="a TrueType font with Hangul (fonts-nanum)")
    args = p.parse_args(argv)
    names = write(args.out, args.n, args.seed, args.font)
    print(f"{len(names)} receipts in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
