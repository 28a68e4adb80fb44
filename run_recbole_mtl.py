"""Train and evaluate a recbole_mtl model or any RecBole baseline (same flags as run_recbole.py).

    python run_recbole_mtl.py --model=MTLRec --dataset=ml-100k
    python run_recbole_mtl.py -m SASRec -d ml-100k --config_files="a.yaml b.yaml" --epochs=5
"""

from recbole_mtl.cli import main

if __name__ == "__main__":
    main()
