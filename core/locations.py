"""The location registry: where app data is hosted, and the AWS regions its keys live in.

The first region of a location is its primary: data keys are generated there, and in
dual-region locations also wrapped under the second region's key. Add a location in one line.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    code: str
    name: str
    regions: tuple[str, ...]

    @property
    def primary_region(self) -> str:
        return self.regions[0]

    @property
    def is_multi_region(self) -> bool:
        return len(self.regions) > 1

    def __str__(self) -> str:
        return f"{self.name} ({', '.join(self.regions)})"


LOCATIONS: dict[str, Location] = {
    loc.code: loc
    for loc in (
        Location("eu", "Europe", ("eu-central-1", "eu-west-1")),
        Location("us", "USA", ("us-east-1", "us-west-2")),
        Location("au", "Australia", ("ap-southeast-2",)),
        Location("ca", "Canada", ("ca-central-1",)),
        Location("de", "Germany", ("eu-central-1",)),
        Location("in", "India", ("ap-south-1",)),
        Location("jp", "Japan", ("ap-northeast-1",)),
        Location("kr", "South Korea", ("ap-northeast-2",)),
        Location("sg", "Singapore", ("ap-southeast-1",)),
    )
}

LOCATION_CHOICES = [(loc.code, str(loc)) for loc in LOCATIONS.values()]


def get_location(code: str) -> Location:
    try:
        return LOCATIONS[code]
    except KeyError:
        raise ValueError(f"Unknown location {code!r}.") from None
