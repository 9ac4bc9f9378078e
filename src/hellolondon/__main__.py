from hellolondon.cli import main

raise SystemExit(main())
