"""WGS84 <-> UTM conversion: reference points, round trips, zones, errors, a real GPS sample."""

import json

import numpy as np
import pytest

from gcl_jax.labels import city_zone, latlon_to_utm, utm_to_latlon
from gcl_jax.labels import utm

# (lat, lon, zone, northern, east, north): PROJ 9.5.1 (through pyproj 3.7.2, "+proj=utm
# +ellps=WGS84 [+south]" in each point's plain 6-degree zone), rounded to 0.1 mm.
PROJ_REFERENCE = [
    (33.3, 44.4, 38, True, 444140.5449, 3684706.3555),
    (52.51891666666666, 13.400294444444445, 33, True, 391457.3385, 5819958.7342),
    (-33.8688, 151.2093, 56, False, 334368.6336, 6250948.3454),
    (40.7128, -74.006, 18, True, 583959.3723, 4507350.9982),
    (-23.5505, -46.6333, 23, False, 333287.9151, 7394588.3186),
    (0.0, 9.0, 32, True, 500000.0, 0.0),
    (-0.0001, 33.0, 36, False, 500000.0, 9999988.947),
    (64.0, 5.0, 31, True, 597812.1101, 7098548.7489),
    (71.0, 29.9, 35, True, 605340.3388, 7879918.0554),
    (-54.8, -68.3, 19, False, 545000.0534, 3927239.3813),
    (35.6895, 139.6917, 54, True, 381622.23, 3950298.9079),
    (1.3521, 103.8198, 48, True, 368700.2724, 149479.8663),
    (55.6761, 12.5683, 33, True, 347090.9383, 6172711.7862),
    (37.7749, -122.4194, 10, True, 551130.7685, 4180998.8815),
    (60.39, 5.32, 31, True, 627860.2492, 6697096.9316),
    (-1.2921, 36.8219, 37, False, 257634.5018, 9857079.966),
    (84.0, 0.5, 31, True, 470833.8039, 9328726.7551),
    (-80.0, -179.9, 1, False, 443803.9432, 1117013.3038),
    (0.5, 177.0, 60, True, 500000.0, 55265.0371),
    (10.0, 0.0, 31, True, 171071.2639, 1106908.8542),
]


def test_proj_reference_points_forward_and_inverse():
  lat, lon, zone, northern, east, north = (np.array(c) for c in zip(*PROJ_REFERENCE))
  e, n, z, h = latlon_to_utm(lat, lon, zone=zone, northern=northern)
  np.testing.assert_allclose(e, east, atol=1e-3, rtol=0)  # 1 mm
  np.testing.assert_allclose(n, north, atol=1e-3, rtol=0)
  np.testing.assert_array_equal(z, zone)
  np.testing.assert_array_equal(h, northern)
  la, lo = utm_to_latlon(east, north, zone, northern)
  np.testing.assert_allclose(la, lat, atol=2e-9, rtol=0)  # 0.1 mm rounding of the reference
  np.testing.assert_allclose(lo, lon, atol=2e-9 / np.cos(np.deg2rad(84.0)), rtol=0)


def test_geographiclib_documentation_example():
  # GeographicLib's GeoConvert / UTMUPS example: 33.3 N 44.4 E -> 38n 444140.54 3684706.36.
  e, n, z, h = latlon_to_utm(33.3, 44.4)
  assert (round(float(e), 2), round(float(n), 2), int(z), bool(h)) == (444140.54, 3684706.36, 38,
                                                                         True)


def test_equator_central_meridian_and_quarter_meridian():
  e, n, _, _ = latlon_to_utm(0.0, 15.0)
  assert (float(e), float(n)) == (500000.0, 0.0)
  # On the central meridian northing = k0 * meridian arc; the WGS84 quarter meridian is
  # 10,001,965.7293 m.
  _, n, _, _ = latlon_to_utm(90.0, 15.0)
  assert float(n) == pytest.approx(0.9996 * 10001965.7293, abs=1e-3)
  _, n, _, h = latlon_to_utm(-90.0, 15.0)
  assert float(n) == pytest.approx(10_000_000 - 0.9996 * 10001965.7293, abs=1e-3) and not h
  # East-west symmetry about the central meridian.
  e1, n1, _, _ = latlon_to_utm(47.0, 15.0 + 2.5, zone=33)
  e2, n2, _, _ = latlon_to_utm(47.0, 15.0 - 2.5, zone=33)
  assert float(e1 - 500000) == pytest.approx(float(500000 - e2), abs=1e-6)
  assert float(n1) == pytest.approx(float(n2), abs=1e-6)


def test_round_trip_within_zones():
  rng = np.random.default_rng(0)
  n = 20000
  zone = rng.integers(1, 61, n)
  lat = rng.uniform(-80, 84, n)
  lon = utm.central_meridian(zone) + rng.uniform(-3.5, 3.5, n)
  lon = (lon + 180) % 360 - 180
  e, no, z, h = latlon_to_utm(lat, lon, zone=zone)
  la, lo = utm_to_latlon(e, no, z, h)
  assert np.max(np.abs(la - lat)) < 1e-9
  dlon = (lo - lon + 180) % 360 - 180
  assert np.max(np.abs(dlon)) < 1e-9
  e2, n2, _, _ = latlon_to_utm(la, lo, zone=z, northern=h)
  assert max(np.max(np.abs(e2 - e)), np.max(np.abs(n2 - no))) < 1e-6  # far below 1 cm


def test_round_trip_far_from_the_central_meridian():
  # A city forced into a neighbouring zone (up to ~10 degrees away) still round-trips.
  lat = np.linspace(-60, 70, 50)
  lon = np.full(50, 15.0 + 10.0)
  e, n, z, h = latlon_to_utm(lat, lon, zone=33)
  la, lo = utm_to_latlon(e, n, z, h)
  assert np.max(np.abs(la - lat)) < 1e-9 and np.max(np.abs(lo - lon)) < 1e-9


def test_forced_hemisphere_stays_continuous():
  # A city straddling the equator, projected with one false northing.
  lat = np.array([-0.001, 0.001])
  _, n_own, _, h_own = latlon_to_utm(lat, 36.8)
  assert h_own.tolist() == [False, True] and n_own[0] > 9.99e6 and n_own[1] < 200
  e, n, z, h = latlon_to_utm(lat, 36.8, northern=True)
  assert h.tolist() == [True, True] and n[0] < 0 < n[1]
  assert float(n[1] - n[0]) == pytest.approx(221.2, abs=0.5)  # 0.002 degrees of latitude
  la, lo = utm_to_latlon(e, n, z, True)
  np.testing.assert_allclose(la, lat, atol=1e-12)
  np.testing.assert_allclose(lo, 36.8, atol=1e-12)


def test_forced_zone_across_a_boundary_keeps_distances():
  # Two points 0.002 degrees of longitude apart at 50 N on both sides of the 6 E zone boundary.
  lat, lon = np.array([50.0, 50.0]), np.array([5.999, 6.001])
  assert utm.standard_zone(lat, lon).tolist() == [31, 32]
  e, n, _, _ = latlon_to_utm(lat, lon, zone=31)
  # Ground distance dlon * nu * cos(phi) (nu: prime-vertical radius) times the point scale of the
  # projection, k ~= k0 (1 + x^2 / (2 rho nu)) at x metres from the central meridian.
  a, f = 6378137.0, 1 / 298.257223563
  e2 = f * (2 - f)
  s2 = np.sin(np.deg2rad(50.0)) ** 2
  nu = a / np.sqrt(1 - e2 * s2)
  rho = a * (1 - e2) / (1 - e2 * s2) ** 1.5
  ground = np.deg2rad(0.002) * nu * np.cos(np.deg2rad(50.0))
  x = float(np.mean(e)) - 500000.0
  scale = 0.9996 * (1 + x * x / (2 * rho * nu))
  grid = float(np.hypot(e[1] - e[0], n[1] - n[0]))
  assert grid == pytest.approx(ground * scale, rel=1e-5)


def test_zone_numbers_and_boundaries():
  z = utm.standard_zone
  assert z(0.0, -180.0) == 1 and z(0.0, 180.0) == 1  # 180 E wraps to 180 W
  assert z(0.0, 179.999) == 60 and z(0.0, -174.0) == 2 and z(0.0, -174.0001) == 1
  assert z(0.0, 5.999) == 31 and z(0.0, 6.0) == 32 and z(0.0, 0.0) == 31 and z(0.0, -0.001) == 30
  assert z(0.0, 360.0 + 13.4) == 33  # longitudes are wrapped
  # Norway exception: 56-64 N, 3-12 E is zone 32.
  assert z(60.39, 5.32) == 32 and z(55.99, 5.32) == 31 and z(64.0, 5.32) == 31
  assert z(60.0, 2.99) == 31 and z(60.0, 12.0) == 33
  # Svalbard (72-84 N): zones 31, 33, 35, 37.
  assert [int(z(78.0, lon)) for lon in (8.9, 9.0, 20.9, 21.0, 32.9, 33.0, 41.9, 42.0)] == [
      31, 33, 33, 35, 35, 37, 37, 38]
  assert z(71.9, 8.0) == 32
  # The default zone of latlon_to_utm is the standard zone, and the hemisphere follows lat.
  _, _, zone, northern = latlon_to_utm([60.39, -33.87], [5.32, 151.21])
  assert zone.tolist() == [32, 56] and northern.tolist() == [True, False]


def test_city_zone():
  assert city_zone([52.50, 52.52], [13.30, 13.45]) == 33
  with pytest.raises(ValueError, match=r"2 UTM zones \[31, 32\].*5\.9.*6\.1"):
    city_zone([50.0, 50.0, 50.1], [5.9, 6.1, 6.0])
  with pytest.raises(ValueError, match="no points"):
    city_zone([], [])


@pytest.mark.parametrize("call, match", [
    (lambda: latlon_to_utm(91.0, 0.0), "latitude.*91.0"),
    (lambda: latlon_to_utm([10.0, np.nan], [0.0, 0.0]), "latitude.*entry 1.*nan"),
    (lambda: latlon_to_utm(10.0, np.inf), "longitude.*inf"),
    (lambda: latlon_to_utm(10.0, 0.0, zone=0), "zone.*0"),
    (lambda: latlon_to_utm(10.0, 0.0, zone=61), "zone.*61"),
    (lambda: latlon_to_utm(10.0, 0.0, zone=31.5), "zone.*31.5"),
    (lambda: utm_to_latlon(np.nan, 0.0, 31, True), "easting.*nan"),
    (lambda: utm_to_latlon(5e5, 0.0, 99, True), "zone.*99"),
    (lambda: city_zone([95.0], [0.0]), "latitude.*95.0"),
])
def test_invalid_inputs(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_berlin_gps_sample(shared_dir):
  root = shared_dir / "data" / "berlin_gps_sample" / "exif"
  if not root.is_dir():
    pytest.skip(f"{root} (real EXIF GPS sample) is not present")
  gps = [json.loads(p.read_text())["gps"] for p in sorted(root.glob("*.exif"))]
  assert len(gps) == 3
  lat = np.array([g["latitude"] for g in gps])
  lon = np.array([g["longitude"] for g in gps])
  assert city_zone(lat, lon) == 33
  e, n, zone, northern = latlon_to_utm(lat, lon)
  assert zone.tolist() == [33, 33, 33] and northern.all()
  # Berlin Mitte: around 391 km east, 5820 km north in zone 33U.
  assert np.all((e > 390e3) & (e < 393e3)) and np.all((n > 5818e3) & (n < 5822e3))
  for i in range(3):
    for j in range(i + 1, 3):
      d = float(np.hypot(e[i] - e[j], n[i] - n[j]))
      assert 5.0 <= d <= 40.0, (i, j, d)
  la, lo = utm_to_latlon(e, n, zone, northern)
  np.testing.assert_allclose(la, lat, atol=1e-10)
  np.testing.assert_allclose(lo, lon, atol=1e-10)
