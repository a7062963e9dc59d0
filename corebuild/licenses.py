"""The licences imagery comes under: each said once here (its SPDX id where one exists, else a
`LicenseRef-` id for the provider's terms), and chosen once per provider in its definition
(`StreetViewConfig.license`, `MapillaryConfig.license`, `LocalFolderConfig.license`, each aerial
preset's `license`). Every kept row records the ids (`street_license`, `aerial_license`) and the
attributions the terms ask for; `manifest.json` counts rows per id and `corebuild card` names
them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class License:
    id: str  # SPDX identifier, or LicenseRef-... for terms SPDX does not list
    name: str
    url: Optional[str] = None
    redistributable: bool = True  # may the images be published in a dataset at all
    hub: Optional[str] = None  # its Hugging Face Hub `license:` id, where the Hub lists it


NOASSERTION = License("NOASSERTION", "no licence stated (the user's own imagery: state it with --local-license)", redistributable=False)
CC0 = License("CC0-1.0", "Creative Commons Zero v1.0 Universal", "https://creativecommons.org/publicdomain/zero/1.0/", hub="cc0-1.0")
CC_BY_SA_4 = License(
    "CC-BY-SA-4.0", "Creative Commons Attribution Share Alike 4.0 International", "https://creativecommons.org/licenses/by-sa/4.0/", hub="cc-by-sa-4.0"
)
ODBL = License("ODbL-1.0", "Open Data Commons Open Database License v1.0", "https://opendatacommons.org/licenses/odbl/1-0/", hub="odbl")
GOOGLE_MAPS_TOS = License(
    "LicenseRef-Google-Maps-Platform-ToS", "Google Maps Platform Terms of Service; not redistributable", "https://cloud.google.com/maps-platform/terms",
    redistributable=False,
)
ESRI_TOS = License(
    "LicenseRef-Esri-Terms-of-Use", "Esri Master License Agreement / World Imagery terms of use", "https://www.esri.com/en-us/legal/terms/full-master-agreement",
    redistributable=False,
)
BING_TOS = License(
    "LicenseRef-Microsoft-Bing-Maps-ToU", "Microsoft Bing Maps Platform terms of use", "https://www.microsoft.com/en-us/maps/product/terms",
    redistributable=False,
)
MAPBOX_TOS = License("LicenseRef-Mapbox-ToS", "Mapbox Terms of Service", "https://www.mapbox.com/legal/tos", redistributable=False)

LICENSES: dict[str, License] = {lic.id: lic for lic in (NOASSERTION, CC0, CC_BY_SA_4, ODBL, GOOGLE_MAPS_TOS, ESRI_TOS, BING_TOS, MAPBOX_TOS)}

# The synthetic world (corebuild.synthetic): generated imagery, given away.
SYNTHETIC = CC0
SYNTHETIC_ATTRIBUTION = "corebuild synthetic world (generated)"


def license_of(license_id: str) -> License:
    """The licence an id names; an id this table does not know (a user's --local-license) by its id."""
    return LICENSES.get(license_id) or License(license_id, license_id)
