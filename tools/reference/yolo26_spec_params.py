"""Parameter counts of YOLO26 computed from gradscope's written architecture description
(docs/yolo26-architecture.md), without Ultralytics: checks that the description is complete and
exact. Compares layer by layer with the fixture written by export_ultralytics.py.

    python3 tools/reference/yolo26_spec_params.py crates/gradscope/tests/fixtures/yolo26_layers.json
"""
import json
import math
import sys

SCALES = {"n": (0.50, 0.25, 1024), "s": (0.50, 0.50, 1024), "m": (0.50, 1.00, 512),
          "l": (1.00, 1.00, 512), "x": (1.00, 1.50, 512)}
NC = 80

# (from, repeats, module, args) — the YOLO26 detection layout
LAYOUT = [
    (-1, 1, "Conv", [64, 3, 2]), (-1, 1, "Conv", [128, 3, 2]), (-1, 2, "C3k2", [256, False, 0.25]),
    (-1, 1, "Conv", [256, 3, 2]), (-1, 2, "C3k2", [512, False, 0.25]), (-1, 1, "Conv", [512, 3, 2]),
    (-1, 2, "C3k2", [512, True]), (-1, 1, "Conv", [1024, 3, 2]), (-1, 2, "C3k2", [1024, True]),
    (-1, 1, "SPPF", [1024, 5, 3, True]), (-1, 2, "C2PSA", [1024]),
    (-1, 1, "Upsample", []), ([-1, 6], 1, "Concat", []), (-1, 2, "C3k2", [512, True]),
    (-1, 1, "Upsample", []), ([-1, 4], 1, "Concat", []), (-1, 2, "C3k2", [256, True]),
    (-1, 1, "Conv", [256, 3, 2]), ([-1, 13], 1, "Concat", []), (-1, 2, "C3k2", [512, True]),
    (-1, 1, "Conv", [512, 3, 2]), ([-1, 10], 1, "Concat", []), (-1, 1, "C3k2", [1024, True, 0.5, True]),
    ([16, 19, 22], 1, "Detect", []),
]


def conv(c1, c2, k=1, g=1):
    """Conv2d without bias + BatchNorm (γ, β)."""
    return c2 * (c1 // g) * k * k + 2 * c2


def bottleneck(c1, c2, e=0.5, k=(3, 3)):
    c_ = int(c2 * e)
    return conv(c1, c_, k[0]) + conv(c_, c2, k[1])


def c3k(c1, c2, n=2, e=0.5, k=3):
    c_ = int(c2 * e)
    return conv(c1, c_) + conv(c1, c_) + conv(2 * c_, c2) + n * bottleneck(c_, c_, e=1.0, k=(k, k))


def attention(c, heads, ratio=0.5):
    head_dim = c // heads
    key_dim = int(head_dim * ratio)
    return conv(c, c + 2 * key_dim * heads) + conv(c, c) + conv(c, c, 3, g=c)


def psa_block(c):
    return attention(c, max(c // 64, 1)) + conv(c, 2 * c) + conv(2 * c, c)


def c3k2(c1, c2, n, c3k_, e, attn):
    c = int(c2 * e)
    inner = bottleneck(c, c) + psa_block(c) if attn else c3k(c, c) if c3k_ else bottleneck(c, c)
    return conv(c1, 2 * c) + conv((2 + n) * c, c2) + n * inner


def detect(ch, nc=NC, reg_max=1):
    c2, c3 = max(16, ch[0] // 4, reg_max * 4), max(ch[0], min(nc, 100))
    box = sum(conv(x, c2, 3) + conv(c2, c2, 3) + c2 * 4 * reg_max + 4 * reg_max for x in ch)
    cls = sum(conv(x, x, 3, g=x) + conv(x, c3) + conv(c3, c3, 3, g=c3) + conv(c3, c3) + c3 * nc + nc for x in ch)
    return 2 * (box + cls)  # one-to-many and one-to-one branches


def build(scale):
    depth, width, max_ch = SCALES[scale]
    ch, out = [], []  # output channels of every layer so far
    for f, n, m, args in LAYOUT:
        n = max(round(n * depth), 1) if n > 1 else n
        c1 = (ch[f] if ch else 3) if isinstance(f, int) else None  # 3: the RGB input
        if m in ("Conv", "C3k2", "SPPF", "C2PSA"):
            c2 = math.ceil(min(args[0], max_ch) * width / 8) * 8
        if m == "Conv":
            p = conv(c1, c2, args[1])
        elif m == "C3k2":
            c3k_ = scale in "mlx" or (len(args) > 1 and args[1])
            e = args[2] if len(args) > 2 else 0.5
            attn = len(args) > 3 and args[3]
            p = c3k2(c1, c2, n, c3k_, e, attn)
        elif m == "SPPF":
            c_ = c1 // 2
            p = conv(c1, c_) + conv(c_ * (args[2] + 1), c2)
        elif m == "C2PSA":
            c = int(c1 * 0.5)
            p = conv(c1, 2 * c) + conv(2 * c, c1) + n * psa_block(c)
        elif m == "Upsample":
            c2, p = c1, 0
        elif m == "Concat":
            c2, p = sum(ch[x] for x in f), 0
        elif m == "Detect":
            c2, p = None, detect([ch[x] for x in f])
        out.append(p)
        ch.append(c2)
    return out


def main(path):
    ref = json.load(open(path))["scales"]
    ok = True
    for s in SCALES:
        mine = build(s)
        theirs = [l["params"] for l in ref[s]["layers"]]
        bad = [(i, a, b) for i, (a, b) in enumerate(zip(mine, theirs)) if a != b]
        print(s, sum(mine), ref[s]["total_params"], "OK" if not bad and sum(mine) == ref[s]["total_params"] else f"MISMATCH {bad}")
        ok &= not bad
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(sys.argv[1])
