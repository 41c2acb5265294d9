"""The `rules:` section of the configuration: one typed block per rule, with defaults.

Every block has `schools: {<school_id>: {<key>: <value>}}` for per-school overrides of
any other key of that block; `rules.state.Context.rule(name, school)` gives the
effective settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any



@dataclass(frozen=True)
class Corroboration:
    enabled: bool = True
    # A panic press and one of these at the same school within window_seconds (either
    # order) upgrade the panic incident to certainty Observed.
    types: tuple[str, ...] = ("video.fight", "video.intrusion", "sound.scream", "door.forced", "fence.breach")
    window_seconds: float = 120
    # Without a press: this many distinct sensors of at least min_kinds device kinds
    # reporting intrusion-type events in one zone within zone_window_seconds.
    intrusion_types: tuple[str, ...] = ("video.intrusion", "fence.breach", "door.forced")
    min_sensors: int = 2
    min_kinds: int = 2
    zone_window_seconds: float = 120
    severity: str = "Severe"
    quiet_close_seconds: float = 1800
    schools: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class FaceWatchlist:
    enabled: bool = True
    min_similarity: float = 0.85
    # watchlist category -> severity; categories not listed (e.g. staff) raise nothing
    categories: dict[str, str] = field(default_factory=lambda: {"wanted": "Extreme", "restraining_order": "Severe", "missing_student": "Severe"})
    # repeated matches of one person within this long join; the incident closes itself
    # (stage expired) this long after the last match
    join_seconds: float = 600
    schools: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class PlateWatchlist:
    enabled: bool = True
    # plate -> severity (plates are compared upper-case without spaces or dots)
    plates: dict[str, str] = field(default_factory=dict)
    join_seconds: float = 600  # as for faces: reads within this long join, then it closes
    schools: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class VehicleLoitering:
    enabled: bool = True
    min_reads: int = 4
    window_seconds: float = 1800
    severity: str = "Moderate"
    severity_in_windows: str = "Severe"  # during drop-off / pick-up
    quiet_close_seconds: float = 1800
    schools: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Perimeter:
    enabled: bool = True
    types: tuple[str, ...] = ("fence.breach", "video.intrusion", "door.forced")
    severity_after_hours: str = "Severe"
    severity_in_hours: str = "Moderate"
    quiet_close_seconds: float = 1800
    schools: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class VideoBehaviour:
    enabled: bool = True
    fight_severity: str = "Severe"
    crowd_threshold: int = 30
    crowd_zones: tuple[str, ...] = ("gate*",)  # fnmatch patterns
    crowd_severity: str = "Moderate"
    minor_types: tuple[str, ...] = ("video.fall", "video.loiter")
    quiet_close_seconds: float = 1800
    schools: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceHealth:
    enabled: bool = True
    heartbeat_timeout_seconds: float = 180
    # kinds whose silence is itself an incident (a dead panic button is a safety hole)
    heartbeat_kinds: tuple[str, ...] = ("panic_button",)
    battery_low_percent: float = 20
    severity_panic_button: str = "Moderate"
    severity_other: str = "Minor"
    severity_tamper: str = "Severe"
    schools: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class PagingHealth:
    enabled: bool = True
    # When a receiver is failing is huxue notifier's decision (notify.failing_after,
    # notify.failing_seconds); this rule turns it into an incident of the school.
    severity: str = "Moderate"
    severity_panic: str = "Severe"  # a panic's page to it failed
    schools: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class PostStaffing:
    enabled: bool = True
    grace_seconds: float = 300  # how far into a window a post must be staffed
    severity: str = "Moderate"
    schools: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class CoverageGap:
    enabled: bool = True
    check_seconds: float = 15  # how often each school's coverage (and a panic's nearest units) is looked at
    confirm_seconds: float = 30  # uncovered this long before the incident opens (no flapping)
    severity: str = "Severe"
    schools: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Silences:
    max_seconds: float = 7 * 24 * 3600
    schools: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Flood:
    enabled: bool = True
    max_incidents: int = 10
    window_seconds: float = 600
    schools: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class RulesConfig:
    corroboration: Corroboration = field(default_factory=Corroboration)
    face_watchlist: FaceWatchlist = field(default_factory=FaceWatchlist)
    plate_watchlist: PlateWatchlist = field(default_factory=PlateWatchlist)
    vehicle_loitering: VehicleLoitering = field(default_factory=VehicleLoitering)
    perimeter: Perimeter = field(default_factory=Perimeter)
    video_behaviour: VideoBehaviour = field(default_factory=VideoBehaviour)
    device_health: DeviceHealth = field(default_factory=DeviceHealth)
    paging_health: PagingHealth = field(default_factory=PagingHealth)
    post_staffing: PostStaffing = field(default_factory=PostStaffing)
    coverage_gap: CoverageGap = field(default_factory=CoverageGap)
    silence: Silences = field(default_factory=Silences)
    flood: Flood = field(default_factory=Flood)


def normalise_plate(plate: str) -> str:
    """`京a 123·45` and `京A12345` are the same plate."""
    return "".join(ch for ch in plate.upper() if ch.isalnum())
