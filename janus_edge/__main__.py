import sys

from janus_edge.cli import main

sys.exit(main())
