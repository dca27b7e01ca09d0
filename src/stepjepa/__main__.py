from stepjepa.cli import main

raise SystemExit(main())
