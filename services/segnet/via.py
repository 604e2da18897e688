"""VIA (VGG Image Annotator, the paper's annotator) image regions -> COCO instances.

Reads a VIA 2 project (`_via_img_metadata`) or a VIA 1/2 "export annotations as JSON" file (a dict of
image entries with `filename` and `regions`, regions a list or a dict). Polygon, polyline-closed, rect,
circle and ellipse regions become RLE masks; the category is the region attribute `class_attribute`
(default: every region is an "animal"). Image sizes are read from the images.

`sipec train segnet --via FILE --images DIR` reads VIA directly; to write the COCO file:

    python -m services.segnet.via VIA.json --images DIR --out coco.json [--class-attribute NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sipec.data.coco import CocoInstances, image_entry, instance_annotation, make_category


def _region_mask(shape: dict[str, Any], height: int, width: int, where: str) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    kind = shape.get("name")
    if kind in ("polygon", "polyline"):
        pts = np.stack([shape["all_points_x"], shape["all_points_y"]], axis=1).round().astype(np.int32)
        if len(pts) < 3:
            raise ValueError(f"{where}: polygon with {len(pts)} points (needs 3)")
        cv2.fillPoly(mask, [pts], 1)
    elif kind == "rect":
        x, y, w, h = (int(round(shape[k])) for k in ("x", "y", "width", "height"))
        mask[max(y, 0):y + h, max(x, 0):x + w] = 1
    elif kind in ("circle", "ellipse"):
        rx = shape.get("r", shape.get("rx"))
        ry = shape.get("r", shape.get("ry"))
        cv2.ellipse(mask, (int(round(shape["cx"])), int(round(shape["cy"]))), (int(round(rx)), int(round(ry))),
                    float(shape.get("theta", 0.0)) * 180 / np.pi, 0, 360, 1, -1)
    else:
        raise ValueError(f"{where}: region shape {kind!r} is not supported (polygon, rect, circle, ellipse)")
    return mask.astype(bool)


def via_to_coco(via_json: Path, images_dir: Path, class_attribute: str | None = None) -> CocoInstances:
    """COCO instances of a VIA project; ValueError names the file, image and region at fault."""
    try:
        raw = json.loads(Path(via_json).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{via_json}: cannot read VIA JSON ({exc})") from exc
    entries = raw.get("_via_img_metadata", raw) if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        raise ValueError(f"{via_json}: not a VIA project (expected _via_img_metadata or image entries)")
    names: list[str] = []
    images, anns = [], []
    for image_id, (key, entry) in enumerate(entries.items(), start=1):
        if not isinstance(entry, dict) or "filename" not in entry:
            raise ValueError(f"{via_json}: entry {key!r} has no filename")
        path = images_dir / entry["filename"]
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"{path}: missing or not an image (listed in {via_json})")
        h, w = img.shape[:2]
        images.append(image_entry(image_id, w, h, entry["filename"]))
        regions = entry.get("regions", [])
        regions = list(regions.values()) if isinstance(regions, dict) else regions
        for r, region in enumerate(regions):
            where = f"{via_json}: {entry['filename']} region {r}"
            name = "animal"
            if class_attribute:
                name = str(region.get("region_attributes", {}).get(class_attribute, "")).strip()
                if not name:
                    raise ValueError(f"{where}: no region attribute {class_attribute!r}")
            if name not in names:
                names.append(name)
            mask = _region_mask(region.get("shape_attributes", {}), h, w, where)
            anns.append(instance_annotation(mask, ann_id=len(anns) + 1, image_id=image_id,
                                            category_id=names.index(name) + 1))
    cats = [make_category(i + 1, n) for i, n in enumerate(names or ["animal"])]
    return CocoInstances(images=images, annotations=anns, categories=cats, info={"source": str(via_json)})


def main(argv: list[str] | None = None) -> int:
    """Convert a VIA project to a COCO instances file; errors name the file and the problem (exit 2)."""
    from sipec.data.coco import write_coco_instances

    p = argparse.ArgumentParser(prog="python -m services.segnet.via", description=main.__doc__)
    p.add_argument("via", type=Path, help="VIA project or exported annotations JSON")
    p.add_argument("--images", type=Path, required=True, help="folder of the annotated images")
    p.add_argument("--out", type=Path, required=True, help="COCO instances JSON to write")
    p.add_argument("--class-attribute", default=None, help="region attribute holding the class name")
    args = p.parse_args(argv)
    try:
        if not args.images.is_dir():
            raise ValueError(f"--images: directory not found: {args.images}")
        coco = via_to_coco(args.via, args.images, args.class_attribute)
    except ValueError as exc:
        print(f"via: error: {exc}", file=sys.stderr)
        return 2
    write_coco_instances(args.out, coco)
    print(f"via: wrote {len(coco.images)} images, {len(coco.annotations)} instances, "
          f"classes {[c['name'] for c in coco.categories]} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
