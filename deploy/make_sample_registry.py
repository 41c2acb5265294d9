"""Regenerates pipeline/data/registry.yaml: the sample city (20 schools, 1,000+ cameras, 8
mobile units).

Deterministic (no randomness), so the committed file only changes when this script does:
    python deploy/make_sample_registry.py > pipeline/data/registry.yaml

With --schools and/or --devices-per-school it prints a generated city of that size
instead (schools s-0001, s-0002, ...; the sample's layout scaled to the device count),
for registry-scale benchmarks (`huxue bench-scale`):
    python deploy/make_sample_registry.py --schools 2000 --devices-per-school 50 --json > registry.json

--json prints the same registry as JSON, which huxue reads ~200x faster than YAML (a file
named *.json; 100,000 devices: 0.05 s instead of 10 s of the worker's start).
"""

from __future__ import annotations

import argparse
import sys

SCHOOLS = [
    ("zx-01", "Zixing No.1 Middle School", "middle"),
    ("bh-02", "Binhu Experimental Primary School", "primary"),
    ("qs-03", "Qingshan Road Primary School", "primary"),
    ("hx-04", "Huaxia Foreign Languages Middle School", "middle"),
    ("jl-05", "Jinling No.3 Middle School", "middle"),
    ("yh-06", "Yuhua Central Primary School", "primary"),
    ("dc-07", "Dongcheng Experimental School", "middle"),
    ("xs-08", "Xishan No.2 Primary School", "primary"),
    ("nh-09", "Nanhu Middle School", "middle"),
    ("bj-10", "Beijie Street Primary School", "primary"),
    ("cx-11", "Chengxi No.5 Middle School", "middle"),
    ("ly-12", "Liuyang Road Primary School", "primary"),
    ("wh-13", "Wenhua Road Experimental Primary School", "primary"),
    ("gx-14", "Guangxin Senior High School", "high"),
    ("hp-15", "Heping Primary School", "primary"),
    ("ts-16", "Taishan No.1 Middle School", "middle"),
    ("mj-17", "Minjiang Primary School", "primary"),
    ("fy-18", "Fengyuan No.4 Middle School", "middle"),
    ("xy-19", "Xinyuan Bilingual School", "middle"),
    ("zh-20", "Zhonghua Road Primary School", "primary"),
]

# Where and who (fictional addresses and phone numbers, one city around 30.66N 104.06E):
# school -> (street address, district, lat, lon, principal)
WHERE = {
    "zx-01": ("18 Zixing Road", "Jinjiang", 30.6571, 104.0817, "Wang Li"),
    "bh-02": ("6 Binhu East Street", "Chenghua", 30.6832, 104.1135, "Chen Jing"),
    "qs-03": ("221 Qingshan Road", "Jinniu", 30.7012, 104.0431, "Liu Yang"),
    "hx-04": ("45 Huaxia Avenue", "Wuhou", 30.6224, 104.0392, "Zhao Min"),
    "jl-05": ("3 Jinling Lane", "Qingyang", 30.6689, 104.0258, "Sun Hao"),
    "yh-06": ("77 Yuhua Street", "Jinjiang", 30.6398, 104.0903, "Zhou Fang"),
    "dc-07": ("12 Dongcheng Road", "Chenghua", 30.6745, 104.1027, "Wu Qiang"),
    "xs-08": ("90 Xishan Road", "Qingyang", 30.6613, 103.9982, "Zheng Wei"),
    "nh-09": ("5 Nanhu Road", "Wuhou", 30.5987, 104.0551, "Feng Lei"),
    "bj-10": ("31 Beijie Street", "Jinniu", 30.6931, 104.0722, "Huang Yan"),
    "cx-11": ("160 Chengxi Avenue", "Qingyang", 30.6802, 104.0089, "He Jun"),
    "ly-12": ("28 Liuyang Road", "Chenghua", 30.7105, 104.0998, "Lin Na"),
    "wh-13": ("9 Wenhua Road", "Qingyang", 30.6702, 104.0533, "Guo Tao"),
    "gx-14": ("250 Guangxin Road", "Wuhou", 30.6351, 104.0198, "Ma Lin"),
    "hp-15": ("14 Heping Street", "Jinjiang", 30.6497, 104.0688, "Luo Ping"),
    "ts-16": ("66 Taishan Road", "Jinniu", 30.7189, 104.0605, "Xu Gang"),
    "mj-17": ("8 Minjiang Road", "Wuhou", 30.6108, 104.0805, "Hu Xia"),
    "fy-18": ("102 Fengyuan Road", "Chenghua", 30.6933, 104.1289, "Gao Feng"),
    "xy-19": ("55 Xinyuan Avenue", "Gaoxin", 30.5852, 104.0631, "Lu Ying"),
    "zh-20": ("20 Zhonghua Road", "Jinjiang", 30.6283, 104.1052, "Tang Bo"),
}
SITE_PLANS = {"zx-01": "site-plans/zx-01.svg"}  # relative to the registry file

# Mobile units (issue 13): id -> (profile, area, name, callsign). Every sample school is in
# at least one area; cars cover a district, motorbikes cut across, foot patrols walk two
# neighbouring schools.
UNITS = [
    ("car-01", "car", ["zx-01", "yh-06", "hp-15", "zh-20"], "Jinjiang patrol car 1", "锦江巡逻1号"),
    ("car-02", "car", ["bh-02", "dc-07", "ly-12", "fy-18"], "Chenghua patrol car 2", "成华巡逻2号"),
    ("car-03", "car", ["jl-05", "xs-08", "cx-11", "wh-13"], "Qingyang patrol car 3", "青羊巡逻3号"),
    ("car-04", "car", ["hx-04", "nh-09", "gx-14", "mj-17", "xy-19"], "Wuhou patrol car 4", "武侯巡逻4号"),
    ("moto-01", "motorbike", ["qs-03", "bj-10", "ts-16", "wh-13"], "Jinniu motorbike 1", "金牛摩巡1号"),
    ("moto-02", "motorbike", ["nh-09", "mj-17", "xy-19", "yh-06", "zh-20"], "South motorbike 2", "南区摩巡2号"),
    ("foot-01", "foot", ["zx-01", "hp-15"], "Jinjiang foot patrol 1", "锦江步巡1号"),
    ("foot-02", "foot", ["bh-02", "dc-07"], "Chenghua foot patrol 2", "成华步巡2号"),
]


def where_who(sid: str, n: int) -> list[str]:
    """The registry lines of a sample school's address, position, contacts and site plan."""
    street, district, lat, lon, principal = WHERE[sid]
    lines = [
        f"    address: \"{street}, {district} District, Chengdu\"",
        f"    coordinates: {{lat: {lat}, lon: {lon}}}",
        "    contacts:",
        f"      - {{role: guard_post, name: Main gate guard post, phone: \"+86 28 6555 {n:04d}\"}}",
        f"      - {{role: principal, name: {principal}, phone: \"+86 138 0000 {n:04d}\"}}",
        f"      - {{role: police_station, name: {district} Police Station, phone: \"+86 28 6555 9{n:03d}\"}}",
    ]
    if sid in SITE_PLANS:
        lines.append(f"    site_plan: {SITE_PLANS[sid]}")
    return lines


# kind -> (short id part, count, zones cycled through)
LAYOUT = [
    ("panic_button", "btn", 3, ["gate-north", "office", "dormitory"]),
    ("video_analytics", "cam", 42, ["gate-north", "gate-south", "playground", "corridor-a", "corridor-b", "canteen", "perimeter-east", "perimeter-west"]),
    ("face_camera", "face", 6, ["gate-north", "gate-south"]),
    ("plate_camera", "lpr", 5, ["gate-north", "gate-south", "road-east"]),
    ("fence", "fence", 4, ["perimeter-north", "perimeter-east", "perimeter-south", "perimeter-west"]),
    ("audio_sensor", "mic", 2, ["corridor-a", "dormitory"]),
    ("access_control", "door", 3, ["gate-north", "gate-south", "dormitory"]),
    ("guard_terminal", "post", 2, ["gate-north", "gate-south"]),
]


LEVELS = ("primary", "middle", "high")


def layout(devices_per_school: int | None = None) -> list[tuple[str, str, int, list[str]]]:
    """LAYOUT, or LAYOUT scaled to `devices_per_school` (at least one device of each kind;
    largest remainders first, so the counts add up exactly)."""
    if devices_per_school is None:
        return LAYOUT
    if devices_per_school < len(LAYOUT):
        raise ValueError(f"devices_per_school must be at least {len(LAYOUT)} (one device of each kind), got {devices_per_school}")
    total = sum(count for _, _, count, _ in LAYOUT)
    shares = [count * devices_per_school / total for _, _, count, _ in LAYOUT]
    counts = [max(1, int(share)) for share in shares]
    # hand out what is missing by largest remainder (ties: LAYOUT order); take back from the largest
    for i in sorted(range(len(LAYOUT)), key=lambda i: (int(shares[i]) - shares[i], i))[: max(0, devices_per_school - sum(counts))]:
        counts[i] += 1
    while sum(counts) > devices_per_school:
        counts[counts.index(max(counts))] -= 1
    return [(kind, part, n, zones) for (kind, part, _, zones), n in zip(LAYOUT, counts)]


def generated_schools(n: int) -> list[tuple[str, str, str]]:
    """`n` schools s-0001, s-0002, ... (wider numbers past 9,999), levels in turn."""
    width = max(4, len(str(n)))
    out = []
    for i in range(1, n + 1):
        level = LEVELS[(i - 1) % len(LEVELS)]
        out.append((f"s-{i:0{width}d}", f"Generated {level.capitalize()} School {i:0{width}d}", level))
    return out


def render(schools: int | None = None, devices_per_school: int | None = None) -> str:
    """The registry YAML. Defaults: the sample city, exactly pipeline/data/registry.yaml.
    `schools` N: the generated schools s-0001..; `devices_per_school`: the layout scaled."""
    sample = schools is None and devices_per_school is None
    city = SCHOOLS if schools is None else generated_schools(schools)
    kinds = layout(devices_per_school)
    if sample:
        out = ["# Sample city: 20 schools, 1,000+ cameras, panic buttons, fences, guard terminals, 8 mobile units."]
    else:
        per_school = sum(count for _, _, count, _ in kinds)
        out = [f"# Generated city: {len(city):,} schools x {per_school} devices = {len(city) * per_school:,} devices (for benchmarks)."]
    out += ["# Generated by deploy/make_sample_registry.py; edit that script, not this file.",
            "schools:"]
    for i, (sid, name, level) in enumerate(city, 1):
        short = sid.replace("-", "")
        pickup = ("15:50", "16:40") if level == "primary" else ("16:50", "17:40")
        close = "16:30" if level == "primary" else "17:30"
        out += [
            f"  - id: {sid}",
            f"    name: {name}",
            "    timezone: Asia/Shanghai",
            f"    hours: {{days: [mon, tue, wed, thu, fri], open: \"07:30\", close: \"{close}\"}}",
            f"    windows: [{{start: \"07:00\", end: \"07:50\"}}, {{start: \"{pickup[0]}\", end: \"{pickup[1]}\"}}]",
            f"    posts: [{{id: {short}-gate-n, required_officers: 2}}, {{id: {short}-gate-s, required_officers: 2}}]",
        ]
        if sample:
            out += where_who(sid, i)
    out.append("devices:")
    for sid, _, _ in city:
        short = sid.replace("-", "")
        for kind, part, count, zones in kinds:
            for n in range(1, count + 1):
                zone = zones[(n - 1) % len(zones)]
                extra = ""
                if sid == "zx-01" and kind == "video_analytics" and n == 1:
                    extra = ", external: {frigate: gate_cam}, zone_map: {gate_inner: gate-north, fence_line: perimeter-north}, loiter_zones: [bench]"
                if sid == "zx-01" and kind in ("face_camera", "plate_camera") and n == 1:
                    extra = ", external: {frigate: gate_cam}"  # the same Frigate camera
                if sid == "zx-01" and kind == "panic_button" and n == 2:
                    extra = ", external: {zigbee2mqtt: office_sos}"
                out.append(f"  - {{id: {short}-{part}-{n}, school: {sid}, kind: {kind}, zone: {zone}{extra}}}")
    if sample:
        out.append("units:")
        for uid, profile, area, name, callsign in UNITS:
            out.append(f"  - {{id: {uid}, profile: {profile}, area: [{', '.join(area)}], name: {name}, callsign: \"{callsign}\"}}")
    return "\n".join(out) + "\n"


def as_json(yaml_text: str) -> str:
    """The same registry as JSON."""
    import json

    import yaml

    return json.dumps(yaml.load(yaml_text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)), ensure_ascii=False, indent=1) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="print a registry: the sample city, or a generated one of the given size")
    p.add_argument("--schools", type=int, help="generate this many schools s-0001... (default: the 20 sample schools)")
    p.add_argument("--devices-per-school", type=int, help=f"scale the layout to this many devices per school (default: {sum(c for _, _, c, _ in LAYOUT)})")
    p.add_argument("--json", action="store_true", help="print JSON (for a registry named *.json) instead of YAML")
    args = p.parse_args(argv)
    if args.schools is not None and args.schools < 1:
        p.error("--schools must be at least 1")
    try:
        text = render(args.schools, args.devices_per_school)
        if args.json:
            text = as_json(text)
        sys.stdout.write(text)
    except ValueError as exc:
        p.error(str(exc))


if __name__ == "__main__":
    main()
