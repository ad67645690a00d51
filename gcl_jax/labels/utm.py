"""WGS84 latitude/longitude <-> UTM conversion (vectorised NumPy, no external dependencies).

Transverse Mercator with Krüger's series to sixth order in the third flattening n (as given by
C. F. F. Karney, "Transverse Mercator with an accuracy of a few nanometers", J. Geodesy 85 (2011),
eqs. 35-36); the series is accurate to a few nanometres within the UTM zones (and to well under a
millimetre up to ~30 degrees from the central meridian). The inverse solves the conformal latitude
with Newton's method (Karney 2011, eqs. 19-21).

UTM: scale k0 = 0.9996 on the central meridian, false easting 500 km, false northing 0 in the
northern hemisphere and 10,000 km in the southern one. Zones are 6 degrees wide, zone 1 starting
at 180 W, with the standard exceptions (southwest Norway: zone 32 extends over 3-12 E between 56 N
and 64 N; Svalbard, 72-84 N: zones 31, 33, 35, 37 only).
"""

from __future__ import annotations

import numpy as np

# WGS84 ellipsoid and UTM constants.
A_WGS84 = 6378137.0
F_WGS84 = 1.0 / 298.257223563
K0 = 0.9996
FALSE_EASTING = 500000.0
FALSE_NORTHING_SOUTH = 10000000.0

_N = F_WGS84 / (2.0 - F_WGS84)  # third flattening
_E2 = F_WGS84 * (2.0 - F_WGS84)
_E = np.sqrt(_E2)
# Rectifying radius: A = a / (1 + n) (1 + n^2/4 + n^4/64 + n^6/256).
_A = A_WGS84 / (1.0 + _N) * (1.0 + _N**2 / 4.0 + _N**4 / 64.0 + _N**6 / 256.0)


def _series(n: float, rows: list[list[tuple[int, int, int]]]) -> np.ndarray:
  """Evaluates sum_k (num/den) n^k for each row of (num, den, power) terms."""
  return np.array([sum(num / den * n**p for num, den, p in row) for row in rows])


# Krüger's alpha (forward) and beta (inverse) coefficients, Karney (2011) eqs. 35 and 36.
_ALPHA = _series(_N, [
    [(1, 2, 1), (-2, 3, 2), (5, 16, 3), (41, 180, 4), (-127, 288, 5), (7891, 37800, 6)],
    [(13, 48, 2), (-3, 5, 3), (557, 1440, 4), (281, 630, 5), (-1983433, 1935360, 6)],
    [(61, 240, 3), (-103, 140, 4), (15061, 26880, 5), (167603, 181440, 6)],
    [(49561, 161280, 4), (-179, 168, 5), (6601661, 7257600, 6)],
    [(34729, 80640, 5), (-3418889, 1995840, 6)],
    [(212378941, 319334400, 6)],
])
_BETA = _series(_N, [
    [(1, 2, 1), (-2, 3, 2), (37, 96, 3), (-1, 360, 4), (-81, 512, 5), (96199, 604800, 6)],
    [(1, 48, 2), (1, 15, 3), (-437, 1440, 4), (46, 105, 5), (-1118711, 3870720, 6)],
    [(17, 480, 3), (-37, 840, 4), (-209, 4480, 5), (5569, 90720, 6)],
    [(4397, 161280, 4), (-11, 504, 5), (-830251, 7257600, 6)],
    [(4583, 161280, 5), (-108847, 3991680, 6)],
    [(20648693, 638668800, 6)],
])
_J2 = 2.0 * np.arange(1, 7)  # 2j for j = 1..6


def _first_bad(mask: np.ndarray, values: np.ndarray) -> tuple[int, float]:
  """Index (into the flattened array) and value of the first True entry of `mask`."""
  i = int(np.flatnonzero(mask.reshape(-1))[0])
  return i, float(values.reshape(-1)[i])


def standard_zone(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
  """UTM zone number (1..60) of each point, with the Norway and Svalbard exceptions.

  Args:
    lat, lon: degrees (broadcast); lat in [-90, 90], any finite longitude (wrapped to [-180, 180)).

  Returns:
    int64 array of the broadcast shape.

  Raises:
    ValueError: naming the first non-finite or out-of-range coordinate.
  """
  lat, lon = _check_latlon(lat, lon)
  lon = _wrap_lon(lon)
  zone = np.floor((lon + 180.0) / 6.0).astype(np.int64) + 1
  zone = np.clip(zone, 1, 60)
  norway = (lat >= 56.0) & (lat < 64.0) & (lon >= 3.0) & (lon < 12.0)
  zone = np.where(norway, 32, zone)
  svalbard = (lat >= 72.0) & (lat <= 84.0) & (lon >= 0.0) & (lon < 42.0)
  sv_zone = np.select([lon < 9.0, lon < 21.0, lon < 33.0], [31, 33, 35], 37)
  return np.where(svalbard, sv_zone, zone)


def city_zone(lat: np.ndarray, lon: np.ndarray) -> int:
  """The single UTM zone of all the points of a city.

  Raises:
    ValueError: if the points fall in more than one zone (the message lists the zones and one
      point of each), if there are no points, or on an invalid coordinate.
  """
  lat, lon = np.broadcast_arrays(*_check_latlon(lat, lon))
  if lat.size == 0:
    raise ValueError("city_zone: no points given")
  zones = standard_zone(lat, lon).reshape(-1)
  uniq = np.unique(zones)
  if len(uniq) > 1:
    examples = []
    for z in uniq[:4]:
      i = int(np.flatnonzero(zones == z)[0])
      la, lo = lat.reshape(-1)[i], lon.reshape(-1)[i]
      examples.append(f"zone {int(z)} at (lat {la:.6f}, lon {lo:.6f})")
    raise ValueError(f"points span {len(uniq)} UTM zones {uniq.tolist()}: " + ", ".join(examples) +
                     "; pass an explicit zone to latlon_to_utm to project them all into one zone")
  return int(uniq[0])


def _check_latlon(lat, lon) -> tuple[np.ndarray, np.ndarray]:
  """float64 arrays of lat and lon; ValueError naming the first invalid entry."""
  lat = np.asarray(lat, np.float64)
  lon = np.asarray(lon, np.float64)
  bad = ~np.isfinite(lat) | (np.abs(lat) > 90.0)
  if np.any(bad):
    i, v = _first_bad(bad, lat)
    raise ValueError(f"latitude must be finite and within [-90, 90] degrees; entry {i} is {v!r}")
  bad = ~np.isfinite(lon)
  if np.any(bad):
    i, v = _first_bad(bad, lon)
    raise ValueError(f"longitude must be finite; entry {i} is {v!r}")
  return lat, lon


def _wrap_lon(lon: np.ndarray) -> np.ndarray:
  """Longitude wrapped to [-180, 180)."""
  return (lon + 180.0) % 360.0 - 180.0


def _check_zone(zone) -> np.ndarray:
  """int64 array of zone numbers; ValueError naming the first one that is not an integer 1..60."""
  zone = np.asarray(zone)
  if not np.issubdtype(zone.dtype, np.integer):
    if not np.all(np.isfinite(zone)) or np.any(zone != np.round(zone)):
      bad = ~np.isfinite(zone) | (zone != np.round(zone))
      i, v = _first_bad(bad, zone.astype(np.float64))
      raise ValueError(f"UTM zone must be an integer in 1..60; entry {i} is {v!r}")
    zone = zone.astype(np.int64)
  bad = (zone < 1) | (zone > 60)
  if np.any(bad):
    i, v = _first_bad(bad, zone)
    raise ValueError(f"UTM zone must be an integer in 1..60; entry {i} is {int(v)}")
  return zone.astype(np.int64)


def central_meridian(zone) -> np.ndarray:
  """Longitude (degrees) of the central meridian of a UTM zone."""
  return 6.0 * _check_zone(zone) - 183.0


def latlon_to_utm(lat, lon, zone=None, northern=None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """WGS84 geographic coordinates to UTM.

  Args:
    lat, lon: degrees (arrays or scalars, broadcast against each other).
    zone: None for each point's own standard zone (see `standard_zone`), or a zone number (or an
      array of them) to force; forcing one zone for a whole city (e.g. `city_zone(lat, lon)`) keeps
      its coordinates continuous across a zone boundary.
    northern: None for each point's hemisphere (lat >= 0), or a bool (array) to force the false
      northing (a southern-hemisphere city crossing the equator stays continuous).

  Returns:
    (east, north, zone, northern): float64 metres, int64 zone numbers and bool hemisphere flags,
    all of the broadcast shape.

  Raises:
    ValueError: on a non-finite or out-of-range latitude, a non-finite longitude or a zone outside
      1..60 (the message names the offending entry).
  """
  lat, lon = _check_latlon(lat, lon)
  if zone is None:
    zone = standard_zone(lat, lon)
  zone = _check_zone(zone)
  if northern is None:
    northern = lat >= 0.0
  northern = np.asarray(northern, bool)
  lat, lon, zone, northern = np.broadcast_arrays(lat, lon, zone, northern)

  phi = np.deg2rad(lat)
  lam = np.deg2rad(_wrap_lon(lon - central_meridian(zone)))
  # Conformal latitude: tau' = tan(chi) = sinh(atanh(sin phi) - e atanh(e sin phi)), written via
  # tau = tan(phi) so that the poles stay finite (Karney 2011, eq. 7).
  sin_phi = np.sin(phi)
  tau = np.where(np.abs(lat) == 90.0, np.copysign(np.inf, lat), np.tan(phi))
  with np.errstate(invalid="ignore"):
    sigma = np.sinh(_E * np.arctanh(_E * sin_phi))
    taup = np.where(np.isinf(tau), tau,
                    tau * np.sqrt(1.0 + sigma**2) - sigma * np.sqrt(1.0 + tau**2))
  cos_lam = np.cos(lam)
  xip = np.arctan2(taup, cos_lam)
  etap = np.arcsinh(np.sin(lam) / np.hypot(taup, cos_lam))
  etap = np.where(np.isinf(taup), 0.0, etap)
  j2xi = _J2 * xip[..., None]
  j2eta = _J2 * etap[..., None]
  xi = xip + np.sum(_ALPHA * np.sin(j2xi) * np.cosh(j2eta), axis=-1)
  eta = etap + np.sum(_ALPHA * np.cos(j2xi) * np.sinh(j2eta), axis=-1)
  east = FALSE_EASTING + K0 * _A * eta
  north = K0 * _A * xi + np.where(northern, 0.0, FALSE_NORTHING_SOUTH)
  return east, north, zone, northern


def utm_to_latlon(east, north, zone, northern) -> tuple[np.ndarray, np.ndarray]:
  """UTM to WGS84 geographic coordinates (the inverse of `latlon_to_utm`).

  Args:
    east, north: metres (broadcast with zone and northern).
    zone: zone number(s) 1..60.
    northern: bool hemisphere flag(s) (False: the 10,000 km false northing was added).

  Returns:
    (lat, lon) in degrees, lon wrapped to [-180, 180).

  Raises:
    ValueError: on a non-finite coordinate or a zone outside 1..60.
  """
  east = np.asarray(east, np.float64)
  north = np.asarray(north, np.float64)
  for name, v in (("east", east), ("north", north)):
    if not np.all(np.isfinite(v)):
      i, x = _first_bad(~np.isfinite(v), v)
      raise ValueError(f"UTM {name}ing must be finite; entry {i} is {x!r}")
  zone = _check_zone(zone)
  northern = np.asarray(northern, bool)
  east, north, zone, northern = np.broadcast_arrays(east, north, zone, northern)

  xi = (north - np.where(northern, 0.0, FALSE_NORTHING_SOUTH)) / (K0 * _A)
  eta = (east - FALSE_EASTING) / (K0 * _A)
  j2xi = _J2 * xi[..., None]
  j2eta = _J2 * eta[..., None]
  xip = xi - np.sum(_BETA * np.sin(j2xi) * np.cosh(j2eta), axis=-1)
  etap = eta - np.sum(_BETA * np.cos(j2xi) * np.sinh(j2eta), axis=-1)
  sinh_etap = np.sinh(etap)
  cos_xip = np.cos(xip)
  taup = np.sin(xip) / np.hypot(sinh_etap, cos_xip)
  lam = np.arctan2(sinh_etap, cos_xip)
  # Newton's method for tau = tan(phi) given tau' (Karney 2011, eqs. 19-21); converges to full
  # precision in 2-3 steps, 5 are done for margin.
  tau = taup.copy()
  for _ in range(5):
    sigma = np.sinh(_E * np.arctanh(_E * tau / np.sqrt(1.0 + tau**2)))
    taup_i = tau * np.sqrt(1.0 + sigma**2) - sigma * np.sqrt(1.0 + tau**2)
    dtau = ((taup - taup_i) / np.sqrt(1.0 + taup_i**2) * (1.0 + (1.0 - _E2) * tau**2)
            / ((1.0 - _E2) * np.sqrt(1.0 + tau**2)))
    tau = tau + dtau
  lat = np.rad2deg(np.arctan(tau))
  lon = _wrap_lon(np.rad2deg(lam) + central_meridian(zone))
  return lat, lon
