"""A procedural street world written in the MSLS on-disk layout (demo data and tests).

Each city is a rectangular street grid closed by a ring of buildings. Every block edge is lined
with buildings whose facades are painted procedurally and distinctively (window grids of
different sizes and spacings, doors, shop fronts with signs and awnings, string courses,
balconies, pilasters, roof lines, chimneys, glass towers), streets have lane markings,
crossings, curbs, trees and lamp posts. Images are ray cast with a real pinhole camera (90 degree
horizontal field of view, 2.5 m above the road): one ray per column against all facade segments,
rows mapped to heights, a ground plane below and the sky above.

Database and query traversals drive along the streets with forward, backward and sideways
cameras. Place identity lives in the STRUCTURE (which facade, which windows, which roof line);
appearance changes between traversals: every sequence has its own condition (sunny with cast
shadows, overcast, autumn, winter with snow, dusk, night with lit windows and street lamps, fog),
its own camera response (exposure, white balance, gamma, saturation, noise) and its own
transient occluders (parked and moving cars, pedestrians). Queries also differ in lane, frame
phase and pose jitter.

The default world has ~3,000 images of 64 x 96 pixels (three training cities of ~700 images,
a validation city of ~175 queries and ~540 database images) and takes ~25 s of one CPU core.
On its validation city raw 8 x 12 colour thumbnails reach ~17 % Recall@1 (chance ~12 %).

Modules, from the bottom up: `common` (seeded generators, noise), `paint` (textures and the
atlas), `layout` (WorldConfig, streets, cities, traversals, cameras), `render` (conditions,
transients, the ray caster), `write` (the MSLS files, `generate_world`).

Usage:
    root = generate_world("/tmp/world", WorldConfig(**overrides))
    q, db = gcl_jax.data.msls.read_msls_city(root, "synth_val")
    python -m gcl_jax.synthetic /tmp/world     # generate and print the sizes

Everything is a deterministic function of the WorldConfig (and the numpy/Pillow versions).
"""

from gcl_jax.synthetic.layout import (CONDITIONS, Camera, City, Street, Traversal, WorldConfig,
                                     build_city, plan_city, traversal_cameras)
from gcl_jax.synthetic.render import (Condition, Transients, make_condition, make_transients,
                                     render_view)
from gcl_jax.synthetic.write import FORMAT_VERSION, generate_world

__all__ = [
    "CONDITIONS", "FORMAT_VERSION", "Camera", "City", "Condition", "Street", "Transients",
    "Traversal", "WorldConfig", "build_city", "generate_world", "make_condition",
    "make_transients", "plan_city", "render_view", "traversal_cameras",
]
