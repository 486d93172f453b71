"""Let torchvision 0.28.0 (PyPI's CUDA-linked wheel) import on a CPU-only torch 2.13.0+cpu.

Its compiled ops library (_C.so) links libtorch_cuda.so / libc10_cuda.so, which a +cpu torch
does not ship, so the library fails to load (torchvision then reports _has_ops() == False).
torchvision/_meta_registrations.py nevertheless registers fake kernels for torchvision::nms and
torchvision::qnms unconditionally, which raises "operator torchvision::nms does not exist" at
`import torchvision`. This patch guards those two registrations with `_has_ops()` like the rest
of that file already does. Only the compiled detection ops (nms, roi_align, ...) stay unavailable;
CAREamics' N2V path never calls them (careamics only imports torchvision.__version__ and
torchvision.transforms.functional). Idempotent.
"""

import importlib.util
import pathlib
import sys

spec = importlib.util.find_spec("torchvision")
if spec is None or not spec.submodule_search_locations:
    sys.exit("torchvision not installed")
path = (
    pathlib.Path(next(iter(spec.submodule_search_locations))) / "_meta_registrations.py"
)
src = path.read_text()
marker = "# patched-for-cpu-torch"
if marker in src:
    print(f"already patched: {path}")
    sys.exit(0)
helper = f"""

{marker}
def _register_fake_if_ops(qualname):
    def wrapper(fn):
        if torchvision.extension._has_ops():
            return torch.library.register_fake(qualname)(fn)
        return fn

    return wrapper
"""
anchor = "import torchvision.extension  # noqa: F401\n"
assert anchor in src, "unexpected torchvision/_meta_registrations.py layout"
n = src.count("@torch.library.register_fake(")
src = src.replace(anchor, anchor + helper, 1).replace(
    "@torch.library.register_fake(", "@_register_fake_if_ops("
)
path.write_text(src)
print(f"patched {n} register_fake decorators in {path}")
