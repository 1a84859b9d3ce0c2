from itas.cli import main

main()
