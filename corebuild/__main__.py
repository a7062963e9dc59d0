import sys

from corebuild.cli import main

sys.exit(main())
