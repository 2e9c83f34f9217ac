from hybridmesh.cli import main

main()
