"""Import and check 27 popular classifiers (instantiated with weights=None) end to end, as a user would:
`initdiag check --torch REFERENCE --input SHAPE`. Prints one line per model (layers, verdict, import and check
seconds, or the error naming the module and op) and the count that worked.

    python benchmarks/import_classifiers.py [--size 224] [NAME ...]

Needs torch, torchvision and timm (the test extras). ViTs and Mixer keep their fixed 224x224 input; Inception v3
needs at least 75x75 (its default 299 when --size is below that).
"""

from __future__ import annotations

import argparse
import time

TORCHVISION = ["resnet18", "resnet50", "vgg11_bn", "vgg16", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
               "densenet121", "googlenet", "inception_v3", "shufflenet_v2_x1_0", "squeezenet1_0", "regnet_y_400mf",
               "convnext_tiny", "vit_b_16", "swin_t", "mnasnet0_5", "alexnet", "wide_resnet50_2", "resnext50_32x4d"]
TIMM = ["resnet18", "efficientnet_b0", "mobilenetv3_small_100", "vit_tiny_patch16_224", "convnext_atto",
        "deit_tiny_patch16_224", "mixer_b16_224"]
FIXED = {"vit_b_16": 224, "vit_tiny_patch16_224": 224, "deit_tiny_patch16_224": 224, "mixer_b16_224": 224}


def models():
    for name in TORCHVISION:
        yield f"torchvision {name}", f"torchvision.models:{name}", [], name
    for name in TIMM:
        yield f"timm {name}", "timm:create_model", [f"model_name={name}"], name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="image size (default 224)")
    parser.add_argument("--batch", type=int, default=2, help="the check's batch (default 2)")
    parser.add_argument("names", nargs="*", help="only these models (substrings)")
    options = parser.parse_args()

    import initdiag
    from initdiag.importers import ImportProblem, torch_fx

    worked = tried = 0
    for label, reference, arguments, name in models():
        if options.names and not any(part in label for part in options.names):
            continue
        tried += 1
        size = FIXED.get(name, max(options.size, 75) if name == "inception_v3" else options.size)
        start = time.perf_counter()
        try:
            draft = torch_fx.import_module(reference, input=f"3,{size},{size}", arg=arguments)
        except ImportProblem as problem:
            print(f"{label:32} import failed: {problem}", flush=True)
            continue
        imported = time.perf_counter() - start
        path, holder = draft.written_to_temporary()
        with holder:
            try:
                report = initdiag.check(path, batch=options.batch)
            except initdiag.SpecError as error:
                print(f"{label:32} check failed: {error}", flush=True)
                continue
        worked += 1
        print(f"{label:32} {len(draft.layers):4} layers  {report.verdict:8} import {imported:5.1f} s  "
              f"check {time.perf_counter() - start - imported:5.1f} s  ({size}x{size})", flush=True)
    print(f"{worked} of {tried} classifiers imported and checked end to end")


if __name__ == "__main__":
    main()
