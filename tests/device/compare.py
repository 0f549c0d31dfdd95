"""compare.py A.npy B.npy TOL: relative L2 distance of two float32 .npy files
(no numpy needed: the device machine may not have it). Prints the distance;
exits 1 when it exceeds TOL."""
import ast
import math
import struct
import sys


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:6] == b"\x93NUMPY", path
    major = raw[6]
    hlen = struct.unpack("<H" if major == 1 else "<I", raw[8:10] if major == 1 else raw[8:12])[0]
    start = (10 if major == 1 else 12) + hlen
    header = ast.literal_eval(raw[(10 if major == 1 else 12):start].decode())
    assert header["descr"] == "<f4", header
    n = len(raw[start:]) // 4
    return struct.unpack(f"<{n}f", raw[start:start + 4 * n])


a, b = load(sys.argv[1]), load(sys.argv[2])
tol = float(sys.argv[3])
num = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
den = math.sqrt(sum(y * y for y in b)) or 1.0
err = num / den if len(a) == len(b) else float("inf")
print(f"{err:.2e}")
sys.exit(0 if err <= tol and all(math.isfinite(x) for x in a) else 1)
