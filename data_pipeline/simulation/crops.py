"""The 17 crop classes of the original dataset: ids, names, frequencies and nominal phenology."""

from __future__ import annotations

import dataclasses

import numpy as np

INF = 1e4  # a day of year that never comes ("no harvest", "no tillage")


@dataclasses.dataclass(frozen=True)
class Profile:
    """Nominal phenology of one land cover as fractions of ground cover over the day of year.

    A crop's canopy grows from `base` (own winter cover) to `peak` along a logistic centred on
    `up`; a `senescence_amount` share of it turns from green to dry around `senescence`; the
    harvest removes it and leaves `residue` dry cover that decays. Summer crops are sown on bare,
    tilled soil (`till`), which also clears what covered the field over winter.
    """

    base: float = 0.0
    base_dry: float = 0.0
    till: float = INF
    up: float = INF
    up_width: float = 9.0
    peak: float = 0.0
    senescence: float = INF
    senescence_width: float = 7.0
    senescence_amount: float = 1.0
    harvest: float = INF
    residue: float = 0.5
    flower: float = INF
    flower_width: float = 7.0
    flower_amount: float = 0.0
    plastic_start: float = INF
    plastic_end: float = INF
    plastic_amount: float = 0.0
    cuts: int = 0  # mowing cycles (meadow)
    broadleaf: float = 0.0  # share of the green canopy that is broad-leaved (brighter in NIR)
    albedo: float = 1.0  # brightness of the whole mix (canopy shadowing in forests)
    urban: float = 0.0  # sealed-surface fraction (roads, roofs)

    @property
    def winter(self) -> bool:
        """A winter crop or perennial: own cover in January, no spring tillage."""
        return self.till >= INF


def _winter_cereal(up: float, senescence: float, harvest: float, base: float = 0.3) -> Profile:
    # Winter cereals differ only by a few days, as in the field: that is what makes spelt,
    # triticale and rye hard to tell from wheat.
    return Profile(base=base, up=up, peak=0.93, senescence=senescence, harvest=harvest)


# (id, name, relative parcel frequency, profile). Frequencies follow the ranking of the original
# dataset: meadow, maize and winter wheat common; hop, asparagus, soybeans rare.
CROPS = (
    (1, "sugar beet", 4.0, Profile(
        till=95, up=152, up_width=10, peak=0.95, senescence=270, senescence_width=12,
        senescence_amount=0.4, harvest=285, residue=0.3, broadleaf=1.0)),
    (2, "summer oat", 2.5, Profile(
        till=88, up=142, up_width=8, peak=0.9, senescence=194, harvest=224)),
    (3, "meadow", 20.0, Profile(
        base=0.55, base_dry=0.3, up=85, up_width=10, peak=0.9, senescence=305,
        senescence_width=15, senescence_amount=0.35, cuts=4, broadleaf=0.2)),
    # Rape: a dense leafy rosette over winter, then weeks of yellow flowers in late April.
    (5, "rape", 5.0, Profile(
        base=0.45, up=80, peak=0.95, flower=118, flower_width=9, flower_amount=0.75,
        senescence=172, harvest=205, residue=0.55, broadleaf=1.0)),
    # Hop: bare soil between poles until May, bines climb fast, and are cut down in September.
    # (7 m walls of bines shade the alleys between them: a darker canopy.)
    (8, "hop", 1.2, Profile(
        up=152, up_width=7, peak=0.78, senescence=250, senescence_width=8,
        senescence_amount=0.3, harvest=242, residue=0.15, broadleaf=1.0, albedo=0.85)),
    (9, "winter spelt", 2.0, _winter_cereal(up=102, senescence=184, harvest=219)),
    (12, "winter triticale", 3.0, _winter_cereal(up=98, senescence=177, harvest=210)),
    (13, "beans", 1.2, Profile(
        till=80, up=140, peak=0.92, senescence=205, senescence_width=8, harvest=228,
        residue=0.4, broadleaf=1.0)),
    (15, "peas", 1.2, Profile(
        till=85, up=130, up_width=8, peak=0.88, senescence=172, senescence_width=6,
        harvest=198, residue=0.4, broadleaf=1.0)),
    (16, "potato", 4.0, Profile(
        till=110, up=158, up_width=8, peak=0.9, senescence=215, senescence_width=6,
        harvest=245, residue=0.15, broadleaf=1.0)),
    # Soybeans turn yellow and shed their leaves weeks before maize dries down.
    (17, "soybeans", 1.0, Profile(
        till=120, up=163, peak=0.82, senescence=232, senescence_width=5, harvest=258,
        residue=0.3, broadleaf=1.0)),
    (19, "asparagus", 0.8, Profile(
        plastic_start=75, plastic_end=172, plastic_amount=0.7, up=200, up_width=10, peak=0.7,
        senescence=290, senescence_width=10, harvest=320, residue=0.4, broadleaf=0.5)),
    (22, "winter wheat", 16.0, _winter_cereal(up=101, senescence=181, harvest=215, base=0.28)),
    (23, "winter barley", 8.0, _winter_cereal(up=90, senescence=160, harvest=188, base=0.33)),
    (24, "winter rye", 2.5, _winter_cereal(up=94, senescence=172, harvest=204, base=0.32)),
    (25, "summer barley", 5.0, Profile(
        till=82, up=136, up_width=8, peak=0.9, senescence=182, harvest=210)),
    (26, "maize", 18.0, Profile(
        till=115, up=175, up_width=10, peak=0.95, senescence=258, senescence_width=12,
        senescence_amount=0.75, harvest=280, residue=0.25)),
)  # fmt: skip

CLASS_IDS = tuple(crop[0] for crop in CROPS)
CLASS_NAMES = tuple(crop[1] for crop in CROPS)
FREQUENCIES = np.array([crop[2] for crop in CROPS]) / sum(crop[2] for crop in CROPS)
UNKNOWN_ID = 0
# Perennials stay on their field from year to year; the other crops rotate.
PERENNIAL_IDS = (3, 8, 19)
MEADOW_ID = 3
WINTER_CEREAL_IDS = (9, 12, 22, 23, 24)

# Land covers without a crop label (label 0); their profiles follow the crops in the table.
FOREST, SETTLEMENT, ROAD, TRACK = "forest", "settlement", "road", "track"
OTHER_PROFILES = {
    # Mixed forest: evergreen share stays green, the deciduous share leafs out and colours.
    FOREST: Profile(
        base=0.6, up=120, up_width=8, peak=0.92, senescence=290, senescence_width=10,
        senescence_amount=0.35, broadleaf=0.5, albedo=0.6),
    # Roofs and streets with gardens in between; the sealed share varies per pixel.
    SETTLEMENT: Profile(
        base=0.55, base_dry=0.2, up=95, up_width=10, peak=0.85, senescence=300,
        senescence_amount=0.3, urban=0.65, broadleaf=0.4),
    ROAD: Profile(urban=1.0, albedo=0.75),
    # Grassy farm tracks and field margins.
    TRACK: Profile(
        base=0.35, base_dry=0.2, up=100, peak=0.55, senescence=230, senescence_width=15,
        senescence_amount=0.5),
}  # fmt: skip

PROFILE_NAMES = CLASS_NAMES + tuple(OTHER_PROFILES)
PROFILES = tuple(crop[3] for crop in CROPS) + tuple(OTHER_PROFILES.values())
PROFILE_FIELDS = tuple(field.name for field in dataclasses.fields(Profile))


def profile_table() -> dict[str, np.ndarray]:
    """Every Profile field as a float32 array over PROFILES (crops in CROPS order, then others)."""
    return {
        name: np.array([getattr(profile, name) for profile in PROFILES], np.float32)
        for name in PROFILE_FIELDS
    }


def profile_index(label_id: int) -> int:
    """Index into PROFILES of a crop's label id."""
    return CLASS_IDS.index(label_id)


def other_profile_index(name: str) -> int:
    """Index into PROFILES of a non-crop land cover (FOREST, SETTLEMENT, ROAD, TRACK)."""
    return PROFILE_NAMES.index(name)
